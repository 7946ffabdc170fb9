"""The HTTP backend of the http_peer tests (python3 http.server, HTTP/1.1 keep-alive).

Every request is answered with one JSON line naming what arrived: the method, the path,
every header line exactly as sent (name case kept, duplicates kept, in order), the body's
length and SHA-256 (Content-Length or chunked, read in 64 KiB pieces), the client's port
(one per backend connection) and a counter of the requests this process has seen.
`GET /bytes/N` answers N pseudo-random bytes instead, their SHA-256 in `X-Body-Sha256`; a
path starting `/close` is answered with `Connection: close`, and the connection closed.
A request with `Upgrade: np-echo` is answered 101; the JSON line follows, then every byte
received is echoed until the client closes. Prints `ready PORT` once it listens on loopback.
"""

import hashlib
import json
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 1 << 16
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        digest, length = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    piece = self.rfile.read(min(left, PIECE))
                    if not piece:
                        raise ConnectionError("body cut short")
                    digest.update(piece)
                    left -= len(piece)
                    length += len(piece)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, PIECE))
                if not piece:
                    raise ConnectionError("body cut short")
                digest.update(piece)
                left -= len(piece)
                length += len(piece)
        return length, digest.hexdigest()

    def answer(self):
        global seen
        with lock:
            seen += 1
            count = seen
        length, sha = self.read_body()
        report = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": length,
            "body_sha256": sha,
            "client_port": self.client_address[1],
            "count": count,
        }
        line = (json.dumps(report) + "\n").encode()
        if self.headers.get("Upgrade", "").lower() == "np-echo":
            self.send_response(101)
            self.send_header("Upgrade", "np-echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(line)
            self.wfile.flush()
            while True:
                data = self.connection.recv(PIECE)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        if self.path.startswith("/bytes/"):
            body = random.Random(7).randbytes(int(self.path[len("/bytes/"):]))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Body-Sha256", hashlib.sha256(body).hexdigest())
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(line)))
        if self.path.startswith("/close"):
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(line)

    do_GET = do_POST = do_PUT = do_DELETE = answer


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("ready", server.server_address[1], flush=True)
sys.stdout.close()
server.serve_forever()
