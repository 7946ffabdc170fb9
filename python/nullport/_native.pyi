"""Type stubs of ``nullport._native``, the Rust extension of the ``nullport`` package.

Import everything from ``nullport``, not from here.
"""

import os
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Union, final

_Path = Union[str, "os.PathLike[str]"]

__all__ = [
    "Channel",
    "ChannelClosed",
    "HandshakeFailed",
    "Identity",
    "IdentityError",
    "Incoming",
    "IncomingIter",
    "InvalidAddress",
    "Node",
    "NodeClosed",
    "NotAllowed",
    "NullportError",
    "PeerBusy",
    "DialReset",
    "PeerOffline",
    "RelayLinkLost",
    "RelayRefused",
    "RelayUnreachable",
    "Timeout",
    "McpLink",
    "McpService",
    "mcp_connect",
    "mcp_receipt_signature_valid",
    "mcp_serve",
]

class NullportError(Exception):
    """Base class of every error nullport raises."""

class PeerOffline(NullportError):
    """The dialed node is not connected to the relay."""

class PeerBusy(NullportError):
    """The dialed node refused to start the handshake: it has as many being opened as it allows. Try again shortly."""

class DialReset(NullportError):
    """The channel was cut while it was being set up (its stream reset by the peer or the
    relay); the relay link is up, and a new dial may succeed."""

class NotAllowed(NullportError):
    """The peer refused the channel (its policy, an unknown service, a rejected token...):
    the message names the reason, e.g. ``peer np... refused service "echo": not allowed``."""

class RelayRefused(NullportError):
    """The relay refused this node (not on its allowlist, key revoked, wrong relay key...)
    or the request."""

class RelayUnreachable(NullportError):
    """The relay could not be reached (DNS, no answer)."""

class RelayLinkLost(NullportError):
    """The connection to the relay was lost."""

class HandshakeFailed(NullportError):
    """The end-to-end handshake failed (wrong peer, bad proof, authentication failure)."""

class Timeout(NullportError):
    """A step (going online, a dial) did not complete in time."""

class NodeClosed(NullportError):
    """The node is shut down."""

class InvalidAddress(NullportError):
    """A relay address, NodeId, alias, service name or token that does not parse or
    resolve."""

class IdentityError(NullportError):
    """An identity key that cannot be loaded or saved (missing file, wrong passphrase, bad
    format)."""

class ChannelClosed(NullportError):
    """The channel is closed (by this side, or it ended with an error or an abort by the
    peer)."""

@final
class Identity:
    """A node identity (an Ed25519 key pair); its public half is the node's NodeId.

    An identity loaded from a home remembers it, so a node started with it resolves peer
    aliases from that home's trust store.
    """

    @staticmethod
    def generate() -> Identity:
        """A new random identity (not saved anywhere; see ``save``)."""
    @staticmethod
    def load(
        path: _Path,
        passphrase: Optional[str] = None,
        *,
        passphrase_file: Optional[_Path] = None,
    ) -> Identity:
        """Loads the identity in the key file at ``path``.

        An encrypted key's passphrase is ``passphrase`` if given, else the first line of
        ``passphrase_file``, else ``$NULLPORT_PASSPHRASE``, else the systemd credential
        ``nullport-passphrase``, else asked on the terminal (as the CLI does). Raises
        ``IdentityError``.
        """
    @staticmethod
    def from_home(
        home: Optional[_Path] = None,
        passphrase: Optional[str] = None,
        *,
        passphrase_file: Optional[_Path] = None,
    ) -> Identity:
        """Loads the identity of a nullport home (``home``, else ``$NULLPORT_HOME``, else
        ``$XDG_CONFIG_HOME/nullport``, else ``~/.config/nullport``). The passphrase as in
        ``load``. A node started with it resolves aliases from the home's trust store."""
    def save(self, path: _Path, passphrase: Optional[str], *, overwrite: bool = False) -> None:
        """Writes the identity to a key file (mode 0600), encrypted under ``passphrase``, or
        in clear if it is None. Refuses to replace a file unless ``overwrite``."""
    @property
    def node_id(self) -> str:
        """The NodeId (``np...``)."""
    @property
    def home(self) -> Optional[Path]:
        """The home this identity was loaded from, if any."""

@final
class Channel:
    """An end-to-end encrypted channel to one service of one peer (a byte stream both ways).

    A read and a write may run at once (from two tasks). Cancelling a task that awaits
    ``read``, ``readexactly`` or ``write`` aborts the channel (the peer sees it end with an
    error). ``async with channel:`` closes it cleanly on exit.
    """

    @property
    def peer(self) -> str:
        """The peer's NodeId, as proven by the end-to-end handshake."""
    @property
    def service(self) -> str:
        """The service this channel is for."""
    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash (32 bytes, unique per channel; both ends see the same)."""
    @property
    def is_closed(self) -> bool:
        """Whether this side closed or aborted the channel."""
    async def read(self, n: int = 65536) -> bytes:
        """Reads up to ``n`` bytes; ``b""`` once the peer has finished sending (and for
        ``n == 0``). ``n < 0``: everything until the peer finishes sending. Raises
        ``ChannelClosed`` if the channel failed or was closed by this side."""
    async def readexactly(self, n: int) -> bytes:
        """Reads exactly ``n`` bytes; raises ``asyncio.IncompleteReadError`` if the peer
        finishes sending first."""
    async def write(self, data: Union[bytes, bytearray]) -> None:
        """Writes all of ``data``; returns once it is handed to the relay link (a slow peer
        slows the writer down)."""
    async def write_eof(self) -> None:
        """Finishes sending (the peer reads the end); reading goes on."""
    async def close(self) -> None:
        """Closes the channel cleanly (the peer reads the end) and releases it. Harmless
        twice."""
    async def abort(self) -> None:
        """Aborts the channel now: the peer's reads fail with "service unavailable"."""
    async def __aenter__(self) -> Channel: ...
    async def __aexit__(self, *exc: Any) -> None: ...

@final
class Incoming:
    """An authenticated caller waiting for this node's decision. One dropped undecided is
    denied as ``service unavailable``."""

    @property
    def peer(self) -> str:
        """The caller's NodeId, proven by the handshake."""
    @property
    def service(self) -> str:
        """The service asked for."""
    @property
    def token_blob(self) -> bytes:
        """The capability tokens the caller presented (opaque bytes); empty if none."""
    async def accept(self) -> Channel:
        """Accepts the channel."""
    async def deny(self, reason: str = "not allowed") -> None:
        """Refuses the channel; the caller's dial raises ``NotAllowed`` with this reason
        (``"not allowed"``, ``"service not exposed"``, ``"capability token rejected"``,
        ``"rate limited"``, ``"service unavailable"``, ... or ``"unknown_service"``...)."""

@final
class IncomingIter:
    """The async iterator ``Node.incoming()`` returns."""

    def __aiter__(self) -> AsyncIterator[Incoming]: ...
    async def __anext__(self) -> Incoming: ...

@final
class Node:
    """A running node: dials out to its relay, opens channels to peers' services, takes
    incoming channels. ``async with await Node.start(identity, relay) as node:``."""

    @staticmethod
    async def start(
        identity: Identity,
        relay: Optional[str] = None,
        home: Optional[_Path] = None,
        *,
        timeout: float = 10.0,
    ) -> Node:
        """Starts a node linked to ``relay`` (``<relay NodeId>@<host>:<port>`` or
        ``fleet:<admin>/<relay>@<host>:<port>``) and waits up to ``timeout`` seconds until
        the relay admits it. ``home``: a nullport home whose trust store resolves aliases
        (default: the identity's home); without ``relay``, the relay of that home's
        ``config.toml``. Raises ``InvalidAddress``, ``RelayRefused``,
        ``RelayUnreachable``, ``Timeout``."""
    @property
    def node_id(self) -> str:
        """This node's NodeId."""
    async def dial(
        self,
        peer: str,
        service: str,
        token: Optional[str] = None,
        *,
        first: Optional[bytes] = None,
    ) -> Channel:
        """Opens a channel to ``service`` on ``peer`` (NodeId or alias), presenting
        ``token`` (as ``nullport token issue`` prints it, or ``@FILE``). ``first`` (at most
        65,518 bytes) goes out with the handshake's last message: the peer's first answer
        comes a round trip sooner; the peer reads it only once it accepted. Raises
        ``PeerOffline``, ``PeerBusy``, ``DialReset``, ``NotAllowed``, ``InvalidAddress``,
        ``Timeout``, ``HandshakeFailed``, ``NodeClosed``; ``ValueError`` for a longer
        ``first``."""
    async def presence(self, peer: str) -> bool:
        """Whether ``peer`` is connected to the relay now."""
    def incoming(self) -> IncomingIter:
        """The incoming channels (``async for incoming in node.incoming():``); ends when
        the node closes. Until the program first calls ``incoming()`` or ``accept()``, a
        channel to a service nothing serves is refused at once as an unknown service."""
    async def accept(self) -> Incoming:
        """The next incoming channel; raises ``NodeClosed`` once the node is closed."""
    def status(self) -> Dict[str, Any]:
        """``node_id``, ``state`` (the relay link's state in words), ``online``, ``closed``,
        ``relay``, ``relay_id``, ``home_relay``, ``links`` (``[{"relay", "up"}]``)."""
    async def close(self) -> None:
        """Closes the node cleanly; ``incoming()`` ends, later dials raise ``NodeClosed``."""
    async def __aenter__(self) -> Node: ...
    async def __aexit__(self, *exc: Any) -> None: ...

# --- MCP (used by ``nullport.mcp``; import that, not these) ---------------------------------

@final
class McpLink:
    """One MCP session as JSON-RPC lines to and from the Rust MCP side: the caller pipe of
    ``nullport mcp bridge`` (client) or the firewall of a served session (serving side)."""
    @property
    def peer(self) -> str:
        """The callee (client side) or the caller (serving side), a NodeId."""
    @property
    def alias(self) -> Optional[str]:
        """The caller's alias in the serving home's trust store (serving side)."""
    @property
    def service(self) -> str:
        """The MCP service."""
    @property
    def error(self) -> Optional[str]:
        """Why the session ended, if it ended with an error (client side)."""
    async def recv(self) -> Optional[bytes]:
        """The next message (one line, no newline), or None once the other side is done."""
    async def send(self, line: bytes) -> None:
        """Sends one message (one line, no newline); ``ChannelClosed`` once ended."""
    def send_nowait(self, line: bytes) -> bool:
        """Queues one message without waiting; False if the queue is full."""
    def recv_nowait(self) -> Optional[bytes]:
        """The next message if one is already here (None: none now, or ended)."""
    def close_input(self) -> None:
        """Stops sending: the other side reads the end of this session's input."""
    async def aclose(self, timeout: float = 2.0) -> None:
        """Stops sending and waits up to ``timeout`` s for the Rust side to finish."""
    def receipts(self) -> List[tuple[str, bool]]:
        """The receipts received so far (client side): ``(json, checks passed)``."""

@final
class McpService:
    """An MCP service of this node served by a server in this process, behind the firewall."""
    @property
    def service(self) -> str:
        """The service's name."""
    @property
    def open_sessions(self) -> int:
        """Caller sessions open now."""
    async def next_session(self) -> Optional[McpLink]:
        """The next admitted caller session, or None once the service is closed."""
    def reload(self) -> None:
        """Re-reads the home's policy and trust store; ends sessions no longer allowed."""
    def close(self) -> None:
        """Stops serving: open sessions end, new callers are refused."""

async def mcp_connect(
    node: Node, peer: str, service: str, audit: bool = True, token: Optional[str] = None
) -> McpLink:
    """Dials ``service`` on ``peer`` (presenting ``token``) and runs the caller side of
    ``nullport mcp bridge``."""

def mcp_serve(node: Node, service: str, home: Optional[_Path] = None, audit: bool = True) -> McpService:
    """Serves MCP service ``service`` of ``node`` behind the firewall, decided by ``home``."""

def mcp_receipt_signature_valid(receipt: str) -> bool:
    """Whether a receipt (its JSON) carries a valid signature of the callee it names."""
