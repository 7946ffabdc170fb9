//! nullport's rendezvous relay: QUIC admission, routing and blind splicing.
//!
//! The relay is built in the relay issue; this crate currently holds only its command-line
//! entry point.
#![forbid(unsafe_code)]
