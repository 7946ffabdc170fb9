use super::*;
use nullport_protocol::Identity;
use serde_json::json;
use std::sync::Arc;

fn request<'a>(caller: NodeId, args: &'a Value, session: &'a [u8; 32]) -> Request<'a> {
    Request {
        caller,
        caller_alias: Some("agent"),
        service: "files",
        tool: "write_file",
        args,
        args_digest: "ab",
        session,
    }
}

/// Waits until one call is pending; returns it.
async fn pending(approvals: &Approvals) -> PendingApproval {
    for _ in 0..200 {
        if let Some(p) = approvals.list().into_iter().next() {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("nothing pending");
}

fn answer(approve: bool, grant: Option<GrantScope>) -> Answer {
    Answer {
        approve,
        by: Decider::Console,
        reason: Some("looked fine".into()),
        grant,
    }
}

#[tokio::test]
async fn approve_deny_and_timeout_say_who_and_why() {
    let approvals = Arc::new(Approvals::new(
        Duration::from_millis(300),
        Audit::disabled(),
    ));
    let caller = Identity::from_seed([1; 32]).node_id();
    let mut events = approvals.subscribe();
    for (given, outcome, by) in [
        (Some(true), "approved", "console"),
        (Some(false), "denied", "console"),
        (None, "timed out", "timeout"),
    ] {
        let a = approvals.clone();
        let waiting = tokio::spawn(async move {
            let args = json!({"path": "/srv/<b>x</b>", "content": "hi"});
            a.ask(request(caller, &args, &[7; 32])).await
        });
        let p = pending(&approvals).await;
        assert_eq!(p.caller_alias.as_deref(), Some("agent"));
        assert_eq!(p.args, "\"content\": \"hi\"\n\"path\": \"/srv/<b>x</b>\"\n");
        assert!(p.expires_in_secs <= 1);
        if let Some(approve) = given {
            assert!(approvals.answer(&p.id, answer(approve, None)).is_ok());
        }
        let resolution = waiting.await.unwrap();
        assert_eq!(
            (resolution.outcome.as_str(), resolution.by.as_str()),
            (outcome, by)
        );
        assert_eq!(resolution.approved(), outcome == "approved");
        assert!(approvals.list().is_empty());
        let e = approvals.answer(&p.id, answer(true, None)).unwrap_err();
        assert_eq!(e, UnknownApproval(p.id.clone()));
        // Watchers saw it wait, then decided.
        assert!(
            matches!(events.recv().await.unwrap(), ApprovalEvent::Pending { approval } if approval.id == p.id)
        );
        match events.recv().await.unwrap() {
            ApprovalEvent::Decided { id, resolution, .. } => {
                assert_eq!(id, p.id);
                assert_eq!(resolution.outcome, outcome);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_session_grant_approves_later_calls_of_that_session_only_until_revoked() {
    let approvals = Arc::new(Approvals::new(
        Duration::from_millis(300),
        Audit::disabled(),
    ));
    let caller = Identity::from_seed([1; 32]).node_id();
    let args = json!({"path": "/srv/docs/a"});
    let a = approvals.clone();
    let first = tokio::spawn(async move {
        let args = json!({"path": "/srv/docs/a"});
        a.ask(request(caller, &args, &[7; 32])).await
    });
    let p = pending(&approvals).await;
    approvals
        .answer(&p.id, answer(true, Some(GrantScope::Session)))
        .unwrap();
    assert_eq!(first.await.unwrap().outcome, "approved");
    let grants = approvals.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].made_by, "console");
    // The same session: approved at once, by the grant.
    let again = approvals.ask(request(caller, &args, &[7; 32])).await;
    assert_eq!(again.outcome, "granted");
    assert_eq!(again.by, format!("grant {}", grants[0].id));
    // Another session of the same caller: waits (and times out here).
    let other = approvals.ask(request(caller, &args, &[8; 32])).await;
    assert_eq!(other.outcome, "timed out");
    // Revoked: the same session waits again.
    approvals.revoke_grant(&grants[0].id, Decider::Cli).unwrap();
    assert!(approvals.grants().is_empty());
    assert_eq!(
        approvals.revoke_grant(&grants[0].id, Decider::Cli),
        Err(UnknownGrant(grants[0].id.clone()))
    );
    let after = approvals.ask(request(caller, &args, &[7; 32])).await;
    assert_eq!(after.outcome, "timed out");
}

#[tokio::test]
async fn outcomes_and_grants_are_audited_with_who_decided() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let identity = Identity::from_seed([3; 32]);
    let audit = Audit::open(&path, &identity, nullport_audit::AuditConfig::default()).unwrap();
    let approvals = Arc::new(Approvals::new(Duration::from_millis(200), audit));
    let caller = Identity::from_seed([1; 32]).node_id();
    let a = approvals.clone();
    let scope = GrantScope::ArgsMatch {
        name: "path".into(),
        pattern: "/srv/docs/*".into(),
        minutes: 10,
    };
    let waiting = tokio::spawn(async move {
        let args = json!({"path": "/srv/docs/a"});
        a.ask(request(caller, &args, &[7; 32])).await
    });
    let p = pending(&approvals).await;
    approvals.answer(&p.id, answer(true, Some(scope))).unwrap();
    waiting.await.unwrap();
    let matching = json!({"path": "/srv/docs/b"});
    assert_eq!(
        approvals
            .ask(request(caller, &matching, &[9; 32]))
            .await
            .outcome,
        "granted"
    );
    let outside = json!({"path": "/etc/shadow"});
    assert_eq!(
        approvals
            .ask(request(caller, &outside, &[9; 32]))
            .await
            .outcome,
        "timed out"
    );
    let id = approvals.grants()[0].id.clone();
    approvals.revoke_grant(&id, Decider::Cli).unwrap();
    let log = std::fs::read_to_string(&path).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of =
        |event: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == event).collect() };
    let decided = of("approval");
    assert_eq!(decided.len(), 3);
    assert_eq!(
        (
            decided[0]["outcome"].as_str(),
            decided[0]["by"].as_str(),
            decided[0]["reason"].as_str()
        ),
        (Some("approved"), Some("console"), Some("looked fine"))
    );
    assert_eq!(decided[1]["outcome"], "granted");
    assert_eq!(decided[1]["by"], format!("grant {id}"));
    assert_eq!(
        (decided[2]["outcome"].as_str(), decided[2]["by"].as_str()),
        (Some("timed out"), Some("timeout"))
    );
    let grants = of("grant");
    assert_eq!(grants.len(), 2);
    assert_eq!(
        (grants[0]["action"].as_str(), grants[0]["by"].as_str()),
        (Some("made"), Some("console"))
    );
    assert!(
        grants[0]["scope"]
            .as_str()
            .unwrap()
            .starts_with("calls with path matching \"/srv/docs/*\"")
    );
    assert_eq!(
        (grants[1]["action"].as_str(), grants[1]["by"].as_str()),
        (Some("revoked"), Some("cli"))
    );
}

#[tokio::test]
async fn a_call_whose_caller_goes_away_leaves_nothing_to_approve() {
    let approvals = Arc::new(Approvals::new(Duration::from_secs(60), Audit::disabled()));
    let caller = Identity::from_seed([1; 32]).node_id();
    let mut events = approvals.subscribe();
    let a = approvals.clone();
    let waiting = tokio::spawn(async move {
        let args = json!({"path": "/srv/docs/a"});
        a.ask(request(caller, &args, &[7; 32])).await
    });
    let p = pending(&approvals).await;
    // The session ends: its waiting calls are dropped.
    waiting.abort();
    let _ = waiting.await;
    assert!(approvals.list().is_empty(), "a ghost approval stayed");
    assert_eq!(
        approvals.answer(&p.id, answer(true, None)),
        Err(UnknownApproval(p.id.clone()))
    );
    let _pending = events.recv().await.unwrap();
    match events.recv().await.unwrap() {
        ApprovalEvent::Decided { resolution, .. } => {
            assert_eq!(
                (resolution.outcome.as_str(), resolution.by.as_str()),
                ("abandoned", "caller gone")
            )
        }
        other => panic!("{other:?}"),
    }
}
