//! nullport's application: the daemon behind `nullport up` and the `nullport` CLI, over the
//! embeddable [`nullport_node`] library.
//!
//! - [`daemon`]: one relay link, the exposed services, the access decision, the control
//!   socket; [`access`] is that decision, pure, over a snapshot of what grants access;
//! - [`services`]: the service kinds a node exposes (tcp, exec, and mcp behind the
//!   JSON-RPC firewall of [`mcp`]);
//! - [`home`], [`config_file`]: a node's directory and its config file; [`control`]: the
//!   daemon's control protocol; [`audit`]: the node's audit events; [`tokens`]: capability
//!   tokens at the callee;
//!
//! The command line itself (and the quickstart demo) is the `nullport` binary of this crate.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod config_file;
pub mod control;
pub mod daemon;
pub mod edit;
pub mod fdpass;
pub mod home;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod sandbox;
pub mod services;
pub mod tasks;
pub mod tokens;
