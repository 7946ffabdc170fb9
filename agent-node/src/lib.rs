//! nullport's node: the embeddable `Node` API and the `nullport` daemon + CLI.
//!
//! The node is built in the node issue; this crate currently holds only its command-line
//! entry point.
#![forbid(unsafe_code)]
