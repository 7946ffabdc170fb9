//! The MCP JSON-RPC firewall on arbitrary caller and server lines. Property: whatever it
//! forwards to the server is a single JSON object, and a forwarded `tools/call` names an
//! allowed tool (the decision was made on the very value that is dispatched).
//! The body lives in `nullport_tests::fuzz::mcp_firewall` so the committed corpus replays as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nullport_tests::fuzz::mcp_firewall(data));
