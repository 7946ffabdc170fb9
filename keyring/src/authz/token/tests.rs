use super::*;
use proptest::prelude::*;

fn id(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

fn tools(list: &[&str]) -> Scope {
    Scope {
        tools: Some(list.iter().map(|s| s.to_string()).collect()),
        ..Scope::default()
    }
}

const NOW: u64 = 1_800_000_000;

fn root(holder: &Identity) -> Token {
    Token::issue(
        &id(1),
        holder.node_id(),
        None,
        "files",
        tools(&["read_*", "list_directory"]),
        NOW - 10,
        NOW + 600,
    )
    .unwrap()
}

fn check(t: &Token, presenter: &Identity) -> Result<Scope, TokenError> {
    t.verify(
        &presenter.node_id(),
        &id(9).node_id(),
        "files",
        &[id(1).node_id()],
        NOW,
        30,
    )
}

#[test]
fn issue_delegate_verify_and_text_round_trip() {
    let (a, b) = (id(2), id(3));
    let t = root(&a);
    assert_eq!(check(&t, &a), Ok(tools(&["read_*", "list_directory"])));
    let d = t
        .delegate(&a, b.node_id(), None, tools(&["read_file"]), NOW, NOW + 60)
        .unwrap();
    assert_eq!(check(&d, &b), Ok(tools(&["read_file"])));
    let text = d.to_text();
    assert!(text.starts_with("npt1"));
    assert_eq!(Token::from_text(&text).ok(), Some(d.clone()));
    assert!(d.to_bytes().len() < 1024);
}

#[test]
fn widened_delegations_are_refused() {
    let (a, b) = (id(2), id(3));
    let t = root(&a);
    let cases: Vec<(Scope, u64, &str)> = vec![
        (tools(&["read_*", "write_file"]), NOW + 60, "tools"),
        (tools(&["*"]), NOW + 60, "tools"),
        (Scope::default(), NOW + 60, "tools"),
        (tools(&["read_file"]), NOW + 601, "expiry"),
    ];
    for (scope, expires, what) in cases {
        let r = t.delegate(&a, b.node_id(), None, scope, NOW, expires);
        assert_eq!(
            r.err(),
            Some(TokenError::Widened { link: 1, what }),
            "{what}"
        );
    }
    // Forge a widened link by hand (as an attacker would) and present it: refused too.
    let mut forged = t
        .delegate(&a, b.node_id(), None, tools(&["read_file"]), NOW, NOW + 60)
        .unwrap();
    let mut body = forged.links[1].body.clone();
    body.scope = tools(&["*"]);
    forged.links[1] = sign_link(&a, body).unwrap();
    assert_eq!(
        check(&forged, &b),
        Err(TokenError::Widened {
            link: 1,
            what: "tools"
        })
    );
    // Another service.
    let mut body = forged.links[1].body.clone();
    body.scope = tools(&["read_file"]);
    body.service = "ssh".into();
    forged.links[1] = sign_link(&a, body).unwrap();
    assert_eq!(
        check(&forged, &b),
        Err(TokenError::Widened {
            link: 1,
            what: "service"
        })
    );
}

#[test]
fn edited_middle_link_fails_its_signature() {
    let (a, b, c) = (id(2), id(3), id(4));
    let t = root(&a)
        .delegate(&a, b.node_id(), None, tools(&["read_file"]), NOW, NOW + 60)
        .and_then(|t| t.delegate(&b, c.node_id(), None, tools(&["read_file"]), NOW, NOW + 30))
        .unwrap();
    let mut bytes = t.to_bytes();
    let target = bytes.len() / 2;
    bytes[target] ^= 1;
    let r = Token::from_bytes(&bytes).and_then(|t| check(&t, &c));
    assert!(r.is_err());
    // A body edit with the original signature kept.
    let mut edited = t.clone();
    edited.links[1].body.expires += 1;
    edited.links[1].body_bytes = postcard::to_stdvec(&edited.links[1].body).unwrap_or_default();
    assert_eq!(check(&edited, &c), Err(TokenError::BadSignature(1)));
}

#[test]
fn time_holder_audience_issuer_depth() {
    let (a, b) = (id(2), id(3));
    let t = root(&a);
    let late = t.verify(
        &a.node_id(),
        &id(9).node_id(),
        "files",
        &[id(1).node_id()],
        NOW + 631,
        30,
    );
    assert_eq!(
        late,
        Err(TokenError::Expired {
            link: 0,
            expires: NOW + 600
        })
    );
    assert!(
        t.verify(
            &a.node_id(),
            &id(9).node_id(),
            "files",
            &[id(1).node_id()],
            NOW + 629,
            30
        )
        .is_ok(),
        "within skew"
    );
    let early = Token::issue(
        &id(1),
        a.node_id(),
        None,
        "files",
        Scope::default(),
        NOW + 100,
        NOW + 200,
    )
    .unwrap();
    assert_eq!(
        check(&early, &a),
        Err(TokenError::NotYetValid {
            link: 0,
            not_before: NOW + 100
        })
    );
    assert!(matches!(check(&t, &b), Err(TokenError::WrongHolder { .. })));
    let pinned = Token::issue(
        &id(1),
        a.node_id(),
        Some(id(8).node_id()),
        "files",
        Scope::default(),
        NOW,
        NOW + 60,
    )
    .unwrap();
    assert_eq!(check(&pinned, &a), Err(TokenError::WrongAudience));
    assert_eq!(
        t.verify(
            &a.node_id(),
            &id(9).node_id(),
            "ssh",
            &[id(1).node_id()],
            NOW,
            30
        ),
        Err(TokenError::WrongService("files".into()))
    );
    assert_eq!(
        t.verify(
            &a.node_id(),
            &id(9).node_id(),
            "files",
            &[id(5).node_id()],
            NOW,
            30
        ),
        Err(TokenError::UntrustedIssuer(id(1).node_id()))
    );
    let mut deep = t.clone();
    let mut holder = a;
    for i in 0..MAX_CHAIN - 1 {
        let next = id(20 + i as u8);
        deep = deep
            .delegate(
                &holder,
                next.node_id(),
                None,
                tools(&["read_file"]),
                NOW,
                NOW + 60,
            )
            .unwrap();
        holder = next;
    }
    assert_eq!(deep.links.len(), MAX_CHAIN);
    assert!(matches!(
        deep.delegate(
            &holder,
            b.node_id(),
            None,
            tools(&["read_file"]),
            NOW,
            NOW + 60
        ),
        Err(TokenError::TooDeep(9))
    ));
    // A hand-built 9-link chain is refused at decoding.
    let mut wire_links: Vec<WireLink> = deep
        .links
        .iter()
        .map(|l| WireLink {
            body: l.body_bytes.clone(),
            sig: l.sig.to_vec(),
        })
        .collect();
    wire_links.push(wire_links[0].clone());
    let bytes = postcard::to_stdvec(&WireChain {
        version: TOKEN_VERSION,
        links: wire_links,
    })
    .unwrap_or_default();
    assert_eq!(Token::from_bytes(&bytes), Err(TokenError::TooDeep(9)));
}

fn pattern_covered(child: &str, parent: &str) -> bool {
    crate::pattern::Pattern::glob(parent).covers(&crate::pattern::Pattern::glob(child))
}

#[test]
fn pattern_coverage() {
    assert!(pattern_covered("read_file", "read_*"));
    assert!(pattern_covered("read_text*", "read_*"));
    assert!(pattern_covered("anything*", "*"));
    assert!(!pattern_covered("read_*", "read_file"));
    assert!(!pattern_covered("*", "read_*"));
    assert!(!pattern_covered("re*", "read_*"));
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Token::from_bytes(&bytes);
    }

    #[test]
    fn base64_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(b64_decode(&b64_encode(&bytes)), Some(bytes));
    }

    /// Attenuation never widens: whatever a delegate asks for, a chain that verifies
    /// allows only names the root allowed.
    #[test]
    fn attenuation_never_widens(names in proptest::collection::vec("[a-z_]{1,8}\\*?", 0..4), probe in "[a-z_]{1,10}") {
        let (a, b) = (id(2), id(3));
        let t = root(&a);
        if let Ok(d) = t.delegate(&a, b.node_id(), None, Scope { tools: Some(names.clone()), ..Scope::default() }, NOW, NOW + 60)
            && let Ok(scope) = check(&d, &b)
        {
            let allowed_by_child = scope.tools.as_ref().is_some_and(|l| l.iter().any(|p| glob_match(p, &probe)));
            let allowed_by_root = ["read_*", "list_directory"].iter().any(|p| glob_match(p, &probe));
            prop_assert!(!allowed_by_child || allowed_by_root);
        }
    }
}

#[test]
fn argument_rules_travel_in_tokens_and_may_only_be_added_to() {
    let (a, b) = (id(2), id(3));
    let rule = |t: &str| crate::args::ArgRule::parse(t).unwrap();
    let scoped = |rules: &[&str]| Scope {
        tools: Some(vec!["read_text_file".into()]),
        args: rules.iter().map(|r| rule(r)).collect(),
        ..Scope::default()
    };
    let t = Token::issue(
        &id(1),
        a.node_id(),
        None,
        "files",
        scoped(&["read_text_file:/path=/srv/docs/**"]),
        NOW - 10,
        NOW + 600,
    )
    .unwrap();
    let back = Token::from_text(&t.to_text()).unwrap();
    assert_eq!(
        back.links[0].body.scope.args,
        vec![rule("read_text_file:/path=/srv/docs/**")]
    );
    // Narrower: the parent's rule kept, one added.
    let narrower = t
        .delegate(
            &a,
            b.node_id(),
            None,
            scoped(&[
                "read_text_file:/path=/srv/docs/**",
                "read_text_file:/head 1..100",
            ]),
            NOW,
            NOW + 60,
        )
        .unwrap();
    assert_eq!(check(&narrower, &b).unwrap().args.len(), 2);
    // Wider: the parent's rule dropped or loosened.
    for wider in [&[][..], &["read_text_file:/path=/srv/**"][..]] {
        let d = t.delegate(&a, b.node_id(), None, scoped(wider), NOW, NOW + 60);
        assert!(
            matches!(
                d,
                Err(TokenError::Widened {
                    what: "argument rules",
                    ..
                })
            ),
            "{wider:?}: {d:?}"
        );
    }
}
