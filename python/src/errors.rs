//! The exception hierarchy: one Python exception per kind of failure of the Rust layers, the
//! message always the Rust error's own `Display`, unchanged.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyErr, create_exception};

create_exception!(
    nullport,
    NullportError,
    PyException,
    "Base class of every error nullport raises."
);
create_exception!(
    nullport,
    PeerOffline,
    NullportError,
    "The dialed node is not connected to the relay."
);
create_exception!(
    nullport,
    PeerBusy,
    NullportError,
    "The dialed node refused to start the handshake: it has as many being opened as it allows. Try again shortly."
);
create_exception!(
    nullport,
    DialReset,
    NullportError,
    "The channel was cut while it was being set up (its stream reset by the peer or the relay); the relay link is up, and a new dial may succeed."
);
create_exception!(
    nullport,
    NotAllowed,
    NullportError,
    "The peer refused the channel (its policy, an unknown service, a rejected token...): the message names the reason."
);
create_exception!(
    nullport,
    RelayRefused,
    NullportError,
    "The relay refused this node (not on its allowlist, key revoked, wrong relay key...) or the request."
);
create_exception!(
    nullport,
    RelayUnreachable,
    NullportError,
    "The relay could not be reached (DNS, no answer)."
);
create_exception!(
    nullport,
    RelayLinkLost,
    NullportError,
    "The connection to the relay was lost."
);
create_exception!(
    nullport,
    HandshakeFailed,
    NullportError,
    "The end-to-end handshake failed (wrong peer, bad proof, authentication failure)."
);
create_exception!(
    nullport,
    Timeout,
    NullportError,
    "A step (going online, a dial) did not complete in time."
);
create_exception!(
    nullport,
    NodeClosed,
    NullportError,
    "The node is shut down."
);
create_exception!(
    nullport,
    InvalidAddress,
    NullportError,
    "A relay address, NodeId, alias, service name or token that does not parse or resolve."
);
create_exception!(
    nullport,
    IdentityError,
    NullportError,
    "An identity key that cannot be loaded or saved (missing file, wrong passphrase, bad format)."
);
create_exception!(
    nullport,
    ChannelClosed,
    NullportError,
    "The channel is closed (by this side, or it ended with an error or an abort by the peer)."
);

/// Registers the exception classes on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("NullportError", py.get_type::<NullportError>())?;
    m.add("PeerOffline", py.get_type::<PeerOffline>())?;
    m.add("PeerBusy", py.get_type::<PeerBusy>())?;
    m.add("DialReset", py.get_type::<DialReset>())?;
    m.add("NotAllowed", py.get_type::<NotAllowed>())?;
    m.add("RelayRefused", py.get_type::<RelayRefused>())?;
    m.add("RelayUnreachable", py.get_type::<RelayUnreachable>())?;
    m.add("RelayLinkLost", py.get_type::<RelayLinkLost>())?;
    m.add("HandshakeFailed", py.get_type::<HandshakeFailed>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("NodeClosed", py.get_type::<NodeClosed>())?;
    m.add("InvalidAddress", py.get_type::<InvalidAddress>())?;
    m.add("IdentityError", py.get_type::<IdentityError>())?;
    m.add("ChannelClosed", py.get_type::<ChannelClosed>())?;
    Ok(())
}

/// The Python exception for a node error; the message is the error's `Display`.
pub(crate) fn node_error(e: nullport_node::Error) -> PyErr {
    use nullport_node::Error as E;
    use nullport_protocol::Error as P;
    let msg = e.to_string();
    match e {
        E::InvalidRelayAddress { .. } => InvalidAddress::new_err(msg),
        E::RelayUnreachable(_) => RelayUnreachable::new_err(msg),
        E::RelayRefused(_) | E::Link(_) => RelayRefused::new_err(msg),
        E::RelayLinkLost(_) => RelayLinkLost::new_err(msg),
        E::PeerOffline(_) => PeerOffline::new_err(msg),
        E::PeerBusy(_) => PeerBusy::new_err(msg),
        E::DialReset { .. } => DialReset::new_err(msg),
        E::Denied { .. } | E::Protocol(P::Denied { .. }) => NotAllowed::new_err(msg),
        E::Protocol(P::InvalidServiceName | P::SelfDial) => InvalidAddress::new_err(msg),
        E::Protocol(_) => HandshakeFailed::new_err(msg),
        E::Timeout { .. } => Timeout::new_err(msg),
        E::Shutdown => NodeClosed::new_err(msg),
        _ => NullportError::new_err(msg),
    }
}

/// The Python exception for a key-file, passphrase or trust-store error.
pub(crate) fn keyring_error(e: nullport_keyring::Error) -> PyErr {
    IdentityError::new_err(e.to_string())
}

/// The Python exception for a peer name (NodeId or alias) that does not resolve.
pub(crate) fn address_error(e: impl std::fmt::Display) -> PyErr {
    InvalidAddress::new_err(e.to_string())
}

/// The Python exception for a failed read or write on a channel.
pub(crate) fn channel_error(e: std::io::Error) -> PyErr {
    ChannelClosed::new_err(e.to_string())
}
