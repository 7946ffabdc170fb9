"""Typed exceptions with the Rust messages: offline peers, refusals by the relay, bad input,
identity files."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

import nullport

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_wheel_is_under_test() -> None:
    """The tests import the built package, not the source tree."""
    assert not Path(nullport.__file__).resolve().is_relative_to(REPO / "python")
    assert nullport.Channel.__module__ == "nullport._native"


def test_exception_hierarchy() -> None:
    for name in [
        "PeerOffline",
        "PeerBusy",
        "DialReset",
        "NotAllowed",
        "RelayRefused",
        "RelayUnreachable",
        "RelayLinkLost",
        "HandshakeFailed",
        "Timeout",
        "NodeClosed",
        "InvalidAddress",
        "IdentityError",
        "ChannelClosed",
    ]:
        cls = getattr(nullport, name)
        assert issubclass(cls, nullport.NullportError), name
        assert cls.__doc__, name
    assert issubclass(nullport.NullportError, Exception)


def test_every_public_class_and_method_has_a_docstring() -> None:
    for cls in [nullport.Identity, nullport.Node, nullport.Channel, nullport.Incoming]:
        assert cls.__doc__, cls
        for name, member in vars(cls).items():
            if not name.startswith("_"):
                assert getattr(member, "__doc__", None), f"{cls.__name__}.{name}"
    assert nullport.open_connection.__doc__ and nullport.streams_of.__doc__


async def test_an_offline_peer_raises_peer_offline(start_node) -> None:
    node = await start_node()
    absent = nullport.Identity.generate().node_id
    started = time.monotonic()
    with pytest.raises(nullport.PeerOffline) as raised:
        await node.dial(absent, "echo")
    assert type(raised.value) is nullport.PeerOffline
    assert str(raised.value) == f"peer {absent} is offline"
    # "Fast": well under the dial timeout (a generous bound for a loaded machine).
    assert time.monotonic() - started < 5


async def test_bad_peer_service_and_token_inputs(start_node) -> None:
    node = await start_node()
    other = await start_node()
    cases = [
        ("npzzz", "echo", None, '"npzzz" is not a NodeId (a NodeId is 54 long, got 5); aliases need a node started with a home'),
        ("bob", "echo", None, '"bob" is not a NodeId (a NodeId starts with "np"); aliases need a node started with a home'),
        (other.node_id, "bad name!", None, "invalid service name"),
        (other.node_id, "", None, "invalid service name"),
        (node.node_id, "echo", None, "a node cannot open a channel to itself"),
        (other.node_id, "echo", "garbage", "bad token: malformed token: not a nullport token (npt1...)"),
    ]
    for peer, service, token, message in cases:
        with pytest.raises(nullport.InvalidAddress) as raised:
            await node.dial(peer, service, token)
        assert type(raised.value) is nullport.InvalidAddress
        assert str(raised.value) == message
    with pytest.raises(nullport.InvalidAddress, match="^reading token file /nonexistent: "):
        await node.dial(other.node_id, "echo", "@/nonexistent")


@pytest.mark.parametrize(
    ("relay_text", "message"),
    [
        ("bogus", 'invalid relay address "bogus": missing \'@\' (expected <relay NodeId>@<host>:<port>)'),
        ("npabc@127.0.0.1:7443", "invalid relay address \"npabc@127.0.0.1:7443\": relay NodeId: a NodeId is 54 long, got 5 (expected <relay NodeId>@<host>:<port>)"),
        ("{relay}@127.0.0.1", "invalid relay address \"{relay}@127.0.0.1\": missing ':<port>' (expected <relay NodeId>@<host>:<port>)"),
        ("{relay}@127.0.0.1:0", "invalid relay address \"{relay}@127.0.0.1:0\": port \"0\" is not 1-65535 (expected <relay NodeId>@<host>:<port>)"),
    ],
)
async def test_a_bad_relay_string_raises_invalid_address(relay, identity, relay_text: str, message: str) -> None:
    relay_text = relay_text.replace("{relay}", relay.node_id)
    message = message.replace("{relay}", relay.node_id)
    with pytest.raises(nullport.InvalidAddress) as raised:
        await nullport.Node.start(identity, relay_text)
    assert type(raised.value) is nullport.InvalidAddress
    assert str(raised.value) == message


async def test_a_relay_in_allowlist_mode_refuses_an_unlisted_node(start_relay, tmp_path, identity) -> None:
    allow = tmp_path / "allow"
    allow.write_text("")
    closed = start_relay("--allow", str(allow))
    with pytest.raises(nullport.RelayRefused) as raised:
        await nullport.Node.start(identity, closed.address, timeout=10)
    assert type(raised.value) is nullport.RelayRefused
    assert str(raised.value) == "relay refused this node: not on the relay's allowlist (TLS access denied)"
    # Listed: admitted.
    allow.write_text(identity.node_id + "\n")
    deadline = time.monotonic() + 10
    while True:
        try:
            node = await nullport.Node.start(identity, closed.address, timeout=2)
            break
        except nullport.RelayRefused:
            assert time.monotonic() < deadline, "the relay did not re-read its allowlist"
            await asyncio.sleep(0.2)
    async with node:
        assert node.status()["online"]


async def test_a_wrong_relay_key_is_refused(relay, identity) -> None:
    impostor = nullport.Identity.generate().node_id
    address = f"{impostor}@127.0.0.1:{relay.port}"
    with pytest.raises(nullport.RelayRefused) as raised:
        await nullport.Node.start(identity, address, timeout=10)
    assert str(raised.value) == (
        f"relay refused this node: relay key mismatch: the address pins {impostor}, "
        f"the relay presented {relay.node_id}"
    )


async def test_no_relay_there_raises_relay_unreachable(identity) -> None:
    address = f"{nullport.Identity.generate().node_id}@127.0.0.1:9"
    with pytest.raises(nullport.RelayUnreachable) as raised:
        await nullport.Node.start(identity, address, timeout=1)
    assert str(raised.value).startswith("relay unreachable: ")


def test_identity_files(tmp_path, monkeypatch) -> None:
    identity = nullport.Identity.generate()
    assert identity.node_id.startswith("np") and len(identity.node_id) == 54
    assert identity.home is None
    key = tmp_path / "id.key"
    identity.save(key, "correct horse battery")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(nullport.IdentityError):
        identity.save(key, "correct horse battery")  # exists
    assert nullport.Identity.load(key, "correct horse battery").node_id == identity.node_id
    with pytest.raises(nullport.IdentityError) as raised:
        nullport.Identity.load(key, "wrong passphrase")
    assert type(raised.value) is nullport.IdentityError
    assert str(raised.value) == f"{key}: wrong passphrase, or the key file was altered"
    # The CLI's sources: a passphrase file, $NULLPORT_PASSPHRASE.
    pass_file = tmp_path / "pass"
    pass_file.write_text("correct horse battery\n")
    pass_file.chmod(0o600)
    assert nullport.Identity.load(key, passphrase_file=pass_file).node_id == identity.node_id
    monkeypatch.setenv("NULLPORT_PASSPHRASE", "correct horse battery")
    assert nullport.Identity.load(str(key)).node_id == identity.node_id
    monkeypatch.setenv("NULLPORT_PASSPHRASE", "not it at all")
    with pytest.raises(nullport.IdentityError, match="wrong passphrase"):
        nullport.Identity.load(key)
    # In clear.
    plain = tmp_path / "plain.key"
    identity.save(plain, None)
    assert nullport.Identity.load(plain).node_id == identity.node_id
    missing = tmp_path / "missing.key"
    with pytest.raises(nullport.IdentityError) as raised:
        nullport.Identity.load(missing)
    assert str(raised.value) == f"no identity key at {missing} (run `nullport init`, or use Identity.generate())"
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_bytes(b"not a key")
    corrupt.chmod(0o600)
    with pytest.raises(nullport.IdentityError):
        nullport.Identity.load(corrupt)


def test_identity_from_home(make_home, tmp_path, monkeypatch) -> None:
    home = make_home("h")
    identity = nullport.Identity.from_home(home.path)
    assert identity.node_id == home.node_id
    monkeypatch.setenv("NULLPORT_HOME", str(home.path))
    assert nullport.Identity.from_home().node_id == home.node_id
    with pytest.raises(nullport.IdentityError, match="^no identity key at "):
        nullport.Identity.from_home(tmp_path / "empty")
