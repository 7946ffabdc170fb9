//! `nullport._native`: the Python binding of the embeddable nullport node (built with
//! maturin into the `nullport` package; see python/README and docs/python.md).
//!
//! Everything here wraps the Rust crates (`nullport-node`, `nullport-keyring`, the `nullport`
//! app crate for homes and the MCP firewall): no second implementation of anything.
#![forbid(unsafe_code)]

mod aio;
mod channel;
mod errors;
mod identity;
mod incoming;
mod mcp;
mod node;

use pyo3::prelude::*;

/// The native part of the `nullport` package (import `nullport`, not this).
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<identity::Identity>()?;
    m.add_class::<node::Node>()?;
    m.add_class::<node::Incoming>()?;
    m.add_class::<node::IncomingIter>()?;
    m.add_class::<channel::Channel>()?;
    errors::register(m)?;
    mcp::register(m)?;
    Ok(())
}
