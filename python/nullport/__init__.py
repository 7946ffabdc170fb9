"""nullport for Python: an agent process that is a nullport node.

    import asyncio, nullport

    async def main():
        identity = nullport.Identity.from_home()
        async with await nullport.Node.start(identity, "np...@relay.example.net:7443") as node:
            async with await node.dial("files-server", "echo") as channel:
                await channel.write(b"hello")
                await channel.write_eof()
                print(await channel.read())

    asyncio.run(main())

Everything here wraps the Rust node (``nullport._native``); errors are the exceptions below,
with the Rust error messages unchanged.
"""

from ._native import (
    Channel,
    ChannelClosed,
    DialReset,
    HandshakeFailed,
    IdentityError,
    Identity,
    Incoming,
    InvalidAddress,
    Node,
    NodeClosed,
    NotAllowed,
    NullportError,
    PeerBusy,
    PeerOffline,
    RelayLinkLost,
    RelayRefused,
    RelayUnreachable,
    Timeout,
)
from ._streams import open_connection, streams_of

__all__ = [
    "Channel",
    "ChannelClosed",
    "DialReset",
    "HandshakeFailed",
    "Identity",
    "IdentityError",
    "Incoming",
    "InvalidAddress",
    "Node",
    "NodeClosed",
    "NotAllowed",
    "NullportError",
    "PeerBusy",
    "PeerOffline",
    "RelayLinkLost",
    "RelayRefused",
    "RelayUnreachable",
    "Timeout",
    "open_connection",
    "streams_of",
]
