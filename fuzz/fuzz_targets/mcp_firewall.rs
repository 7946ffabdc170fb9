//! The MCP JSON-RPC firewall on arbitrary caller and server lines. Property: whatever it
//! forwards to the server is a single JSON object, and a forwarded `tools/call` names an
//! allowed tool (the decision was made on the very value that is dispatched).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use nullport_keyring::{McpGrant, McpRules};
use nullport_node::mcp::firewall::{Firewall, Verdict, glob_match};

fuzz_target!(|data: &[u8]| {
    let tools = vec!["read_*".to_owned(), "list_directory".to_owned()];
    let mut firewall = Firewall::new(McpGrant {
        rule: "fuzz".into(),
        rules: McpRules { tools: tools.clone(), resources: vec!["file:///srv/".into()], ..McpRules::default() },
        approve: vec!["read_secret".into()],
    });
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if i % 3 == 2 {
            let _ = firewall.from_server(line);
            continue;
        }
        let (verdict, _) = firewall.from_caller(line, Instant::now());
        if let Verdict::Forward(out) | Verdict::Approve { line: out, .. } = verdict {
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|_| panic!("forwarded invalid JSON"));
            assert!(value.is_object(), "forwarded a non-object");
            if value["method"] == "tools/call" {
                let name = value["params"]["name"].as_str().unwrap_or_else(|| panic!("forwarded a nameless call"));
                assert!(tools.iter().any(|t| glob_match(t, name)), "forwarded a forbidden tool {name}");
            }
        }
    }
});
