use super::*;
use serde_json::json;

/// No file system: paths are what they say.
fn as_is(p: &str) -> String {
    p.to_owned()
}

fn rules(texts: &[&str]) -> Vec<ArgRule> {
    texts.iter().map(|t| ArgRule::parse(t).unwrap()).collect()
}

#[test]
fn the_command_line_form_round_trips() {
    for text in [
        "read_text_file:/path=/srv/docs/**",
        "edit_file:/edits/*/path=/srv/docs/*.md",
        "fetch:/method in GET,HEAD",
        "search:/query ~ [a-z ]+",
        "page:/n 1..50",
        "page:/n ..50",
        "write_file:/content <= 65536",
        "run:/shell absent",
    ] {
        let rule = ArgRule::parse(text).unwrap();
        assert_eq!(ArgRule::parse(&rule.describe()).unwrap(), rule, "{text}");
    }
    for bad in [
        "nocolon",
        ":/x=/a",
        "t:x=/a",
        "t:/x=relative/**",
        "t:/x ~ (",
        "t:/x",
        "t:/n ..",
        "t:/x <= many",
    ] {
        assert!(ArgRule::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn paths_stay_under_the_glob_whatever_the_spelling() {
    let r = rules(&["read_text_file:/path=/srv/docs/**"]);
    let ok = |p: &str| check(&r, "read_text_file", &json!({ "path": p }), &as_is).is_ok();
    assert!(ok("/srv/docs/a.txt"));
    assert!(ok("/srv/docs/sub/dir/b.md"));
    assert!(
        !ok("sub/c.txt"),
        "relative: the server decides from where, so refused"
    );
    assert!(ok("/srv/docs/./x/../y"));
    for escape in [
        "/srv/docs/../secret",
        "/srv/docs/../../etc/shadow",
        "../secret",
        "/etc/shadow",
        "/srv/docs-private/x",
        "/srv/docs/%2e%2e/secret",
        "/srv/docs/..%2fsecret",
        "/srv/docs\u{2215}..\u{2215}secret",
        "/srv/docs/\u{ff0e}\u{ff0e}/secret",
        "/srv/docs\\..\\secret",
        "/srv/docs/a\u{0}b",
        "/../../../../srv/docs/../etc",
    ] {
        assert!(!ok(escape), "{escape:?} was let through");
    }
    // Not a string: refused.
    assert!(check(&r, "read_text_file", &json!({ "path": 7 }), &as_is).is_err());
    // Other tools are not constrained by this rule.
    assert!(check(&r, "list_directory", &json!({ "path": "/etc" }), &as_is).is_ok());
}

#[test]
fn symlinks_are_followed_by_resolve() {
    // /srv/docs/out -> /etc (resolve plays the file system).
    let resolve = |p: &str| p.replacen("/srv/docs/out", "/etc", 1);
    let r = rules(&["read_text_file:/path=/srv/docs/**"]);
    let e = check(
        &r,
        "read_text_file",
        &json!({ "path": "/srv/docs/out/shadow" }),
        &resolve,
    )
    .unwrap_err();
    assert_eq!(e.pointer, "/path");
    assert_eq!(e.rule, "read_text_file:/path=/srv/docs/**");
    assert!(
        e.why.contains("\"/etc/shadow\" is not under /srv/docs/**"),
        "{}",
        e.why
    );
}

#[test]
fn nested_objects_and_arrays_are_checked_element_by_element() {
    let r = rules(&["edit_file:/edits/*/path=/srv/docs/**"]);
    let good = json!({"edits": [{"path": "/srv/docs/a"}, {"path": "/srv/docs/b"}]});
    assert!(check(&r, "edit_file", &good, &as_is).is_ok());
    let bad = json!({"edits": [{"path": "/srv/docs/a"}, {"path": "/etc/passwd"}]});
    let e = check(&r, "edit_file", &bad, &as_is).unwrap_err();
    assert_eq!(e.pointer, "/edits/1/path");
}

#[test]
fn sets_regexes_ranges_lengths_and_absence() {
    let r = rules(&[
        "fetch:/method in GET,HEAD",
        "fetch:/url ~ https://docs\\.example\\.net/.*",
        "fetch:/retries 0..3",
        "fetch:/body <= 10",
        "fetch:/headers absent",
    ]);
    let call = |v: Value| check(&r, "fetch", &v, &as_is);
    assert!(call(json!({"method": "GET", "url": "https://docs.example.net/a", "retries": 2, "body": "short"})).is_ok());
    assert!(call(json!({"method": "POST"})).is_err());
    assert!(
        call(json!({"url": "https://docs.example.net.evil/a"})).is_err(),
        "anchored"
    );
    assert!(call(json!({"url": "https://evil/?https://docs.example.net/"})).is_err());
    assert!(call(json!({"retries": 4})).is_err());
    assert!(call(json!({"retries": -1})).is_err());
    assert!(call(json!({"retries": "2"})).is_err());
    assert!(call(json!({"body": "this is longer than ten"})).is_err());
    let e = call(json!({"headers": {}})).unwrap_err();
    assert_eq!(e.why, "it must be absent");
}

#[test]
fn narrowing_keeps_every_parent_rule() {
    let parent = rules(&["read_text_file:/path=/srv/docs/**"]);
    let child = rules(&[
        "read_text_file:/path=/srv/docs/**",
        "read_text_file:/head 1..100",
    ]);
    assert!(narrows(&child, &parent));
    assert!(!narrows(&[], &parent));
    let wider = rules(&["read_text_file:/path=/srv/**"]);
    assert!(!narrows(&wider, &parent));
}
