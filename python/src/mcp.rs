//! The `mcp` part of the binding (MCP over nullport: client transport and serving side).

use pyo3::prelude::*;

/// Registers the MCP classes and functions on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = m;
    Ok(())
}
