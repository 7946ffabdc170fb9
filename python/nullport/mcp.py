"""MCP over nullport, without a bridge process (needs the ``mcp`` SDK: ``pip install nullport[mcp]``).

A client transport for the official SDK::

    from mcp import ClientSession
    import nullport, nullport.mcp

    async with nullport.mcp.connect(node, "files-server/files") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            print(await session.list_tools())

``connect`` dials the peer's service and runs the Rust caller side of ``nullport mcp bridge``
over the channel (each ``tools/call`` signed, each receipt the tool host sends checked), and
yields the SDK's own pair of streams of ``SessionMessage``. The checked receipts are on the
yielded pair (``streams.receipts``). If the peer goes away, requests still waiting get a
JSON-RPC error (code ``CHANNEL_ENDED``), which the SDK raises as ``McpError``.

And the serving side: a Python MCP server (``MCPServer``/``FastMCP`` or the low-level
``Server``) served by the embedded node behind the same JSON-RPC firewall and policy file as
``nullport expose mcp`` (the firewall is the Rust one)::

    server = MCPServer("tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    await nullport.mcp.serve(node, "tools", server, home="~/.config/nullport")
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, List, Optional, Tuple

import anyio
import anyio.lowlevel

from . import _native

try:
    import mcp.types as _types
    from mcp.shared.message import SessionMessage
except ImportError as _error:  # pragma: no cover - the package's `mcp` extra is missing
    raise ImportError("nullport.mcp needs the MCP SDK: pip install 'nullport[mcp]' (or: pip install mcp)") from _error

__all__ = [
    "CHANNEL_ENDED",
    "DENIED",
    "Caller",
    "McpStreams",
    "Receipt",
    "Service",
    "connect",
    "current_caller",
    "expose",
    "serve",
]

logger = logging.getLogger(__name__)

#: The JSON-RPC error code of a request still waiting when the channel ended (the peer went
#: away, or took access away).
CHANNEL_ENDED = -32003

#: The JSON-RPC error code of a call the tool host's firewall refused.
DENIED = -32001

#: How long closing a session waits for the peer to finish, in seconds, by default.
CLOSE_TIMEOUT = 2.0


def _parse(line: bytes) -> "SessionMessage | Exception":
    """One JSON-RPC line as the SDK's message, or the parse error (as the SDK's stdio does)."""
    try:
        adapter = getattr(_types, "jsonrpc_message_adapter", None)
        if adapter is not None:  # mcp 2
            message = adapter.validate_json(line, by_name=False)
        else:  # mcp 1
            message = _types.JSONRPCMessage.model_validate_json(line)
    except ValueError as exc:
        return exc
    return SessionMessage(message)


def _dump(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode()


@dataclass(frozen=True)
class Receipt:
    """A tool host's signed receipt for one ``tools/call``, as the caller side checked it.

    ``valid`` is the caller side's verdict: the callee's signature, over this caller and
    channel, the SHA-256 of the request as sent and of the answer as received. ``decision`` is
    the firewall's (``allowed``, ``denied``, ``approved``, ``not approved``).
    """

    id: Any
    decision: str
    callee: str
    caller: str
    handshake: str
    request_sha256: str
    result_sha256: str
    sig: str
    valid: bool
    json: str

    @classmethod
    def _from_native(cls, text: str, valid: bool) -> "Receipt":
        fields = json.loads(text)
        try:
            request_id = json.loads(fields["id"])
        except (ValueError, RecursionError):
            # Kept as the text the callee signed (a receipt never makes the list raise).
            request_id = fields["id"]
        return cls(
            id=request_id,
            decision=fields["decision"],
            callee=fields["callee"],
            caller=fields["caller"],
            handshake=fields["handshake"],
            request_sha256=fields["request_sha256"],
            result_sha256=fields["result_sha256"],
            sig=fields["sig"],
            valid=valid,
            json=text,
        )

    def signature_valid(self) -> bool:
        """Checks the callee's signature over the receipt again (in Rust)."""
        return _native.mcp_receipt_signature_valid(self.json)


class McpStreams(tuple):
    """The ``(read, write)`` pair ``connect`` yields (unpack it), with the session's details."""

    link: Any

    def __new__(cls, read: Any, write: Any, link: Any) -> "McpStreams":
        pair = super().__new__(cls, (read, write))
        pair.link = link
        return pair

    @property
    def peer(self) -> str:
        """The tool host's NodeId."""
        return self.link.peer

    @property
    def service(self) -> str:
        """The MCP service."""
        return self.link.service

    @property
    def receipts(self) -> List[Receipt]:
        """The receipts received so far, in order, each checked (see ``Receipt.valid``)."""
        return [Receipt._from_native(text, valid) for text, valid in self.link.receipts()]


def _split(target: str) -> Tuple[str, str]:
    peer, sep, service = target.partition("/")
    if not sep or not peer or not service:
        raise _native.InvalidAddress(f"{target!r}: expected PEER/SERVICE (a NodeId or alias, then the service)")
    return peer, service


async def _pump_in(link: Any, sink: Any) -> None:
    """Lines from the link to the SDK's read stream, until the link ends."""
    async with sink:
        while True:
            line = link.recv_nowait()
            if line is None:
                line = await link.recv()
            if line is None:
                return
            try:
                await sink.send(_parse(line))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return


async def _pump_out(link: Any, source: Any) -> None:
    """Messages from the SDK's write stream to the link; closes the link's input at the end.

    A send fails only once the Rust side is gone, whose end the reader then reads too (after
    the answers it gave the requests still waiting): the read stream is left to say so, and
    what the SDK sends from then on is dropped, so that the SDK reports the connection's end
    (an MCP error) rather than a broken stream."""
    try:
        async with source:
            async for message in source:
                line = _dump(message)
                try:
                    if not link.send_nowait(line):
                        await link.send(line)
                except _native.ChannelClosed:
                    link.close_input()
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        link.close_input()


@asynccontextmanager
async def _streams_over(link: Any, close_timeout: float) -> AsyncIterator[Tuple[Any, Any]]:
    """The SDK's memory streams over a link, shaped as the SDK's stdio transports make them,
    closed in bounded time however the block is left."""
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_in, link, read_writer)
        tg.start_soon(_pump_out, link, write_reader)
        try:
            yield read_stream, write_stream
        finally:
            # Bounded whatever the caller's state (cancelled, or the session still open).
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                link.close_input()
                with anyio.move_on_after(close_timeout + 1):
                    await link.aclose(close_timeout)
                for stream in (read_stream, write_stream, read_writer, write_reader):
                    await stream.aclose()
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def connect(
    node: Any,
    target: str,
    *,
    token: Optional[str] = None,
    audit: bool = True,
    close_timeout: float = CLOSE_TIMEOUT,
) -> AsyncIterator[McpStreams]:
    """Opens an MCP session with ``target`` (``"PEER/SERVICE"``, the peer a NodeId or an alias
    of the node's home) and yields the SDK's ``(read, write)`` streams for ``ClientSession``.
    ``token``: a capability token to present (as ``nullport token issue`` prints it, or
    ``@FILE``), as ``nullport mcp bridge --token`` does.

    Raises the node's exceptions if the dial fails (``PeerOffline``, ``NotAllowed``...).
    Leaving the block ends the session within ``close_timeout`` seconds (the channel is
    dropped if the peer has not finished by then). ``audit``: record request signatures and
    receipts in the node's home audit log (if it has a home), as ``nullport mcp bridge`` does.
    """
    if not math.isfinite(close_timeout) or close_timeout < 0:
        raise ValueError("close_timeout must be a finite number of seconds >= 0")
    peer, service = _split(target)
    link = await _native.mcp_connect(node, peer, service, audit, token)
    async with _streams_over(link, close_timeout) as (read, write):
        yield McpStreams(read, write, link)


@dataclass(frozen=True)
class Caller:
    """Who opened the MCP session being served (proven by the handshake)."""

    peer: str
    """The caller's NodeId."""
    alias: Optional[str]
    """Its alias in the serving home's trust store, if any."""
    service: str
    """The MCP service."""


_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("nullport_mcp_caller")


def current_caller() -> Optional[Caller]:
    """In a tool handler of a server ``expose``/``serve`` runs: the caller of this session."""
    return _caller.get(None)


def _lowlevel(server: Any) -> Any:
    """The SDK's low-level ``Server`` of ``server`` (itself, or an ``MCPServer``/``FastMCP``'s)."""
    for attribute in ("_lowlevel_server", "_mcp_server"):  # mcp 2's MCPServer, mcp 1's FastMCP
        inner = getattr(server, attribute, None)
        if inner is not None and hasattr(inner, "run"):
            return inner
    if hasattr(server, "run") and hasattr(server, "create_initialization_options"):
        return server
    raise TypeError(f"{type(server).__name__} is not an MCP server (MCPServer, FastMCP or mcp.server.lowlevel.Server)")


class Service:
    """An MCP service this node serves (``expose`` yields it)."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def name(self) -> str:
        """The service's name."""
        return self._native.service

    @property
    def open_sessions(self) -> int:
        """Caller sessions open now."""
        return self._native.open_sessions

    def reload(self) -> None:
        """Re-reads the home's policy, trust store and revocation lists. A caller no longer
        allowed has its live sessions ended at once; every later message is decided on the new
        rules. Raises ``NullportError`` if a file cannot be read (the rules in force stay)."""
        self._native.reload()


async def _serve_session(server: Any, options: Any, link: Any, raise_exceptions: bool) -> None:
    _caller.set(Caller(peer=link.peer, alias=link.alias, service=link.service))
    try:
        async with _streams_over(link, CLOSE_TIMEOUT) as (read, write):
            await server.run(read, write, options, raise_exceptions=raise_exceptions)
    except Exception:  # one session's failure is not the service's
        logger.exception("MCP session of %s ended with an error", link.peer)


@asynccontextmanager
async def expose(
    node: Any,
    service: str,
    server: Any,
    *,
    home: Any = None,
    audit: bool = True,
    initialization_options: Any = None,
    raise_exceptions: bool = False,
) -> AsyncIterator[Service]:
    """Serves ``server`` as MCP service ``service`` of ``node`` while the block runs.

    Who may call, and which tools, methods, resources and prompts each caller may use, is
    ``home``'s ``policy.toml`` (default: the node's home), read with its ``trust.toml``, as
    for ``nullport expose mcp``: the Rust firewall decides every message, the caller sees only
    what it may use, refusals are JSON-RPC error ``DENIED`` with signed receipts, and events go
    to the home's audit log (``audit``). Each admitted caller session runs
    ``server.run(read, write, initialization_options)`` on its own streams;
    ``current_caller()`` tells a handler who is calling. Leaving the block ends the sessions.
    """
    lowlevel = _lowlevel(server)
    options = initialization_options or lowlevel.create_initialization_options()
    native = _native.mcp_serve(node, service, None if home is None else str(home), audit)
    try:
        async with anyio.create_task_group() as tg:

            async def accept() -> None:
                while True:
                    link = await native.next_session()
                    if link is None:
                        return
                    tg.start_soon(_serve_session, lowlevel, options, link, raise_exceptions)

            tg.start_soon(accept)
            try:
                yield Service(native)
            finally:
                tg.cancel_scope.cancel()
    finally:
        native.close()


async def serve(node: Any, service: str, server: Any, **options: Any) -> None:
    """Serves ``server`` as ``service`` until cancelled (see ``expose`` for the options)."""
    async with expose(node, service, server, **options):
        await anyio.sleep_forever()
