use super::*;
use nullport_keyring::McpRules;
use std::time::Duration;

fn fw(tools: &[&str]) -> Firewall {
    Firewall::new(McpGrant {
        rule: "alice-agent".into(),
        rules: McpRules {
            tools: tools.iter().map(|s| s.to_string()).collect(),
            resources: vec!["file:///srv/".into()],
            ..McpRules::default()
        },
        approve: vec!["write_*".into()],
    })
}

fn reply_of(v: &Verdict) -> Value {
    match v {
        Verdict::Reply(l) => serde_json::from_slice(l).unwrap_or(Value::Null),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn globs() {
    assert!(glob_match("read_file", "read_file"));
    assert!(!glob_match("read_file", "read_files"));
    assert!(glob_match("list_*", "list_directory"));
    assert!(glob_match("*", "anything"));
    assert!(glob_match("a*b*c", "axxbyyc"));
    assert!(!glob_match("a*b*c", "axxcyyb"));
    assert!(!glob_match("ab*ba", "aba"));
}

#[test]
fn allowed_call_is_forwarded_as_parsed() {
    let mut f = fw(&["read_file"]);
    let (v, d) = f.from_caller(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a"}}}"#, Instant::now());
    assert!(matches!(v, Verdict::Forward(_)));
    assert_eq!(
        (d.outcome, d.target.as_deref()),
        ("allowed", Some("read_file"))
    );
    assert_eq!(d.args_digest.map(|s| s.len()), Some(64));
}

#[test]
fn hidden_tool_called_by_name_is_denied_with_the_rule() {
    let mut f = fw(&["read_file"]);
    let (v, d) = f.from_caller(br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"delete_everything","arguments":{},"_meta":{"caller":"admin"}}}"#, Instant::now());
    let r = reply_of(&v);
    assert_eq!(r["id"], "x");
    assert_eq!(r["error"]["code"], DENIED);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("alice-agent")
    );
    assert_eq!(d.outcome, "denied");
}

#[test]
fn batches_malformed_and_unknown_methods_get_errors() {
    let mut f = fw(&["*"]);
    let now = Instant::now();
    let (v, _) = f.from_caller(
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]"#,
        now,
    );
    assert_eq!(reply_of(&v)["error"]["code"], INVALID_REQUEST);
    let (v, _) = f.from_caller(b"{not json", now);
    assert_eq!(reply_of(&v)["error"]["code"], PARSE_ERROR);
    let (v, _) = f.from_caller(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, now);
    assert_eq!(reply_of(&v)["error"]["code"], INVALID_REQUEST);
    let (v, _) = f.from_caller(
        br#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"}"#,
        now,
    );
    assert_eq!(reply_of(&v)["error"]["code"], METHOD_NOT_FOUND);
    let (v, _) = f.from_caller(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, now);
    assert_eq!(reply_of(&v)["error"]["code"], INVALID_REQUEST);
    let big = vec![b' '; MAX_MESSAGE + 1];
    let (v, _) = f.from_caller(&big, now);
    assert_eq!(reply_of(&v)["error"]["code"], INVALID_REQUEST);
    // And the session is still usable.
    let (v, _) = f.from_caller(br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#, now);
    assert!(matches!(v, Verdict::Forward(_)));
}

#[test]
fn lists_are_filtered_to_what_the_caller_may_use() {
    let mut f = fw(&["read_file", "list_*"]);
    let (v, _) = f.from_caller(
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
        Instant::now(),
    );
    assert!(matches!(v, Verdict::Forward(_)));
    let out = f.from_server(br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"read_file"},{"name":"write_file"},{"name":"list_directory"}]}}"#);
    let out: Value = serde_json::from_slice(&out.unwrap_or_default()).unwrap_or(Value::Null);
    let names: Vec<&str> = out["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["read_file", "list_directory"]);
    // A response with another id is not filtered (and not confused with the list).
    let (_, _) = f.from_caller(
        br#"{"jsonrpc":"2.0","id":8,"method":"resources/list"}"#,
        Instant::now(),
    );
    let out = f.from_server(br#"{"jsonrpc":"2.0","id":8,"result":{"resources":[{"uri":"file:///srv/a"},{"uri":"file:///etc/passwd"}]}}"#);
    let out: Value = serde_json::from_slice(&out.unwrap_or_default()).unwrap_or(Value::Null);
    assert_eq!(out["result"]["resources"].as_array().map(Vec::len), Some(1));
}

#[test]
fn resources_outside_prefix_and_unsolicited_responses() {
    let mut f = fw(&[]);
    let (v, _) = f.from_caller(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#, Instant::now());
    assert_eq!(reply_of(&v)["error"]["code"], DENIED);
    let (v, _) = f.from_caller(br#"{"jsonrpc":"2.0","id":99,"result":{}}"#, Instant::now());
    assert_eq!(v, Verdict::Drop);
    assert!(
        f.from_server(br#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#)
            .is_some()
    );
    let (v, _) = f.from_caller(
        br#"{"jsonrpc":"2.0","id":"s1","result":{"roots":[]}}"#,
        Instant::now(),
    );
    assert!(matches!(v, Verdict::Forward(_)));
}

#[test]
fn approval_and_quotas() {
    let mut f = fw(&["*"]);
    let now = Instant::now();
    let (v, d) = f.from_caller(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"x"}}}"#, now);
    assert!(matches!(v, Verdict::Approve { ref tool, .. } if tool == "write_file"));
    assert_eq!(d.outcome, "approval");
    let mut f = Firewall::new(McpGrant {
        rule: "r".into(),
        rules: McpRules {
            tools: vec!["*".into()],
            calls_per_minute: Some(2),
            max_concurrent: Some(5),
            ..McpRules::default()
        },
        approve: vec![],
    });
    let call = |i: u32| {
        format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"t"}}}}"#)
    };
    assert!(matches!(
        f.from_caller(call(1).as_bytes(), now).0,
        Verdict::Forward(_)
    ));
    assert!(matches!(
        f.from_caller(call(2).as_bytes(), now).0,
        Verdict::Forward(_)
    ));
    assert_eq!(
        reply_of(&f.from_caller(call(3).as_bytes(), now).0)["error"]["code"],
        QUOTA_EXCEEDED
    );
    assert!(matches!(
        f.from_caller(call(4).as_bytes(), now + Duration::from_secs(61))
            .0,
        Verdict::Forward(_)
    ));
}

#[test]
fn only_answers_to_requests_in_flight_pass_once_under_their_exact_id() {
    let mut f = fw(&["read_file"]);
    let list = |f: &mut Firewall, id: u32| {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        assert!(matches!(
            f.from_caller(line.as_bytes(), Instant::now()).0,
            Verdict::Forward(_)
        ));
    };
    let answer = |id: &str| {
        let tools = r#"{"tools":[{"name":"read_file"},{"name":"exfil"}]}"#;
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{tools}}}"#)
    };
    list(&mut f, 1);
    // Answers to nothing in flight are dropped.
    for id in ["2", "null"] {
        assert_eq!(f.from_server(answer(id).as_bytes()), None, "id {id}");
    }
    // The same id spelled as a string (the SDKs would take it, unfiltered): dropped, and the
    // request gets an error instead of waiting; a later real answer is dropped too.
    let out: Value =
        serde_json::from_slice(&f.from_server(answer(r#""1""#).as_bytes()).unwrap()).unwrap();
    assert_eq!(out["id"], 1);
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"answered under another id ("1" for 1)"#),
        "{out}"
    );
    assert!(!out.to_string().contains("exfil"));
    assert_eq!(f.from_server(answer("1").as_bytes()), None);
    // As a float: the same.
    list(&mut f, 2);
    let out: Value =
        serde_json::from_slice(&f.from_server(answer("2.0").as_bytes()).unwrap()).unwrap();
    assert_eq!(out["id"], 2);
    assert!(out.get("result").is_none());
    // The real answer passes, filtered; a second answer to the same id does not.
    list(&mut f, 3);
    let out: Value =
        serde_json::from_slice(&f.from_server(answer("3").as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out["result"]["tools"],
        serde_json::json!([{ "name": "read_file" }])
    );
    assert_eq!(f.from_server(answer("3").as_bytes()), None);
    assert_eq!(f.from_server(answer(r#""3""#).as_bytes()), None);
    // An error about an unreadable line (id null) passes; notifications pass.
    let err = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
    assert!(f.from_server(err).is_some());
    let note = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
    assert!(f.from_server(note).is_some());
    // A request id already in flight is refused (its answer could not be told apart).
    f.from_caller(
        br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#,
        Instant::now(),
    );
    let (v, _) = f.from_caller(
        br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#,
        Instant::now(),
    );
    assert!(matches!(v, Verdict::Reply(_)));
}

#[test]
fn respelled_ids_are_recognised_as_the_sdks_would_match_them() {
    use serde_json::json;
    let key = |v: Value| loose_id_key(&v);
    for same in [
        json!(1),
        json!(1.0),
        json!("1"),
        json!(" 1 "),
        json!("0x1"),
        json!("1e0"),
        json!("+1"),
    ] {
        assert_eq!(key(same.clone()), Some("n:1".to_owned()), "{same}");
    }
    assert_eq!(key(json!("")), Some("n:0".to_owned()));
    assert_eq!(key(json!("abc")), Some("s:abc".to_owned()));
    assert_eq!(key(json!(1.5)), Some("n:1.5".to_owned()));
    assert_eq!(key(json!(null)), None);
    assert_eq!(key(json!([1])), None);
}

#[test]
fn ambiguous_messages_forged_answers_and_loose_duplicate_ids_are_refused() {
    let mut f = fw(&["read_file", "write_file"]);
    let now = Instant::now();
    f.from_caller(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, now);
    // A `method` that is not a string, or a request that carries a result, passes no check:
    // dropped (an SDK could take it as the answer to 1).
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":null,"result":{"tools":[{"name":"exfil"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5,"result":{"tools":[{"name":"exfil"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{"tools":[{"name":"exfil"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"error":{"code":1,"message":"m"}}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
    ] {
        assert_eq!(f.from_server(line.as_bytes()), None, "{line}");
    }
    // "1" while 1 is in flight: refused (a loose client could not tell their answers apart).
    let (v, _) = f.from_caller(br#"{"jsonrpc":"2.0","id":"1","method":"ping"}"#, now);
    assert!(matches!(v, Verdict::Reply(_)));
    // A call waiting for a person was not sent: an answer to it is a forgery, dropped, and
    // the call is still answerable once it is sent.
    let call = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"write_file","arguments":{}}}"#;
    assert!(matches!(
        f.from_caller(call, now).0,
        Verdict::Approve { .. }
    ));
    let fake = br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"FAKE"}]}}"#;
    assert_eq!(f.from_server(fake), None);
    f.sent_after_approval(&serde_json::json!(3));
    assert!(f.from_server(fake).is_some());
}
