//! Standing approvals: a human's "yes" that covers more than one call (the rest of this
//! caller's session, the next N minutes, or calls whose argument matches a pattern), always
//! for one caller, one service and one tool, always with an end. Listed, revocable at once,
//! and audited when made, used, revoked and when they expire.

use nullport_protocol::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest a grant may last, whatever was asked (a session grant too).
pub const MAX_GRANT_SECS: u64 = 24 * 3600;

/// How far an approval reaches beyond the call it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// Later calls of this tool in the same MCP session of this caller.
    Session,
    /// Calls of this tool by this caller for the next `minutes`.
    Minutes(u32),
    /// Calls whose argument `name` is a string matching the `*` glob `pattern`, for the next
    /// `minutes`.
    ArgsMatch {
        /// The argument.
        name: String,
        /// The glob its value must match.
        pattern: String,
        /// How long.
        minutes: u32,
    },
}

/// A standing approval in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Short id (to revoke it).
    pub id: String,
    /// The caller it is for.
    pub caller: NodeId,
    /// The MCP service.
    pub service: String,
    /// The tool.
    pub tool: String,
    /// The session it is bound to (hex of its handshake hash), for a session grant.
    pub session: Option<String>,
    /// The argument that must match, and its glob.
    pub args_match: Option<(String, String)>,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// Who made it ("cli", "console").
    pub made_by: String,
    /// Why, if a reason was given.
    pub reason: Option<String>,
}

impl Grant {
    /// A grant from an approval of `scope`, made at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        caller: NodeId,
        service: &str,
        tool: &str,
        session: &[u8; 32],
        scope: &GrantScope,
        now: u64,
        made_by: &str,
        reason: Option<String>,
    ) -> Grant {
        let minutes = |m: u32| (u64::from(m) * 60).min(MAX_GRANT_SECS);
        let (session, args_match, secs) = match scope {
            GrantScope::Session => (
                Some(nullport_protocol::hex::encode(session)),
                None,
                MAX_GRANT_SECS,
            ),
            GrantScope::Minutes(m) => (None, None, minutes(*m)),
            GrantScope::ArgsMatch {
                name,
                pattern,
                minutes: m,
            } => (None, Some((name.clone(), pattern.clone())), minutes(*m)),
        };
        Grant {
            id,
            caller,
            service: service.to_owned(),
            tool: tool.to_owned(),
            session,
            args_match,
            until: now.saturating_add(secs),
            made_by: made_by.to_owned(),
            reason,
        }
    }

    /// Whether this grant covers a call, at `now`.
    pub fn covers(
        &self,
        caller: &NodeId,
        service: &str,
        tool: &str,
        session: &[u8; 32],
        args: &Value,
        now: u64,
    ) -> bool {
        if now >= self.until || self.caller != *caller || self.service != service {
            return false;
        }
        if self.tool != tool {
            return false;
        }
        if let Some(s) = &self.session
            && *s != nullport_protocol::hex::encode(session)
        {
            return false;
        }
        match &self.args_match {
            None => true,
            Some((name, pattern)) => args
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|v| argument_matches(pattern, v)),
        }
    }

    /// The scope as a person reads it.
    pub fn describe(&self) -> String {
        let until = nullport_audit::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.until),
        );
        match (&self.session, &self.args_match) {
            (Some(_), _) => format!("this session (at most until {until})"),
            (None, Some((name, pattern))) => {
                format!("calls with {name} matching {pattern:?}, until {until}")
            }
            (None, None) => format!("every call until {until}"),
        }
    }
}

/// Whether argument `value` matches a grant's `pattern`: a pattern that starts with `/` is a
/// path glob (the value normalised, absolute only, symlinks resolved on this host, matched
/// segment by segment: `*` never crosses a `/`, `**` does), anything else a plain `*` glob.
fn argument_matches(pattern: &str, value: &str) -> bool {
    use nullport_keyring::args::{normalise, path_matches};
    if !pattern.starts_with('/') {
        return nullport_keyring::pattern::glob_match(pattern, value);
    }
    match normalise(value) {
        Ok(path) => {
            let real = crate::mcp::firewall::resolve_on_this_host(&path);
            path_matches(pattern, &real)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;
    use serde_json::json;

    #[test]
    fn a_grant_covers_only_its_caller_tool_scope_and_time() {
        let (a, b) = (
            Identity::from_seed([1; 32]).node_id(),
            Identity::from_seed([2; 32]).node_id(),
        );
        let (s1, s2) = ([1u8; 32], [2u8; 32]);
        let args = json!({"path": "/srv/docs/a.txt"});
        let session = Grant::new(
            "g".into(),
            a,
            "files",
            "write_file",
            &s1,
            &GrantScope::Session,
            100,
            "cli",
            None,
        );
        assert!(session.covers(&a, "files", "write_file", &s1, &args, 101));
        assert!(
            !session.covers(&a, "files", "write_file", &s2, &args, 101),
            "another session"
        );
        assert!(
            !session.covers(&b, "files", "write_file", &s1, &args, 101),
            "another caller"
        );
        assert!(
            !session.covers(&a, "files", "read_file", &s1, &args, 101),
            "another tool"
        );
        assert!(
            !session.covers(&a, "other", "write_file", &s1, &args, 101),
            "another service"
        );
        assert!(!session.covers(&a, "files", "write_file", &s1, &args, 100 + MAX_GRANT_SECS));
        let minutes = Grant::new(
            "g".into(),
            a,
            "files",
            "write_file",
            &s1,
            &GrantScope::Minutes(10),
            100,
            "cli",
            None,
        );
        assert!(minutes.covers(&a, "files", "write_file", &s2, &args, 699));
        assert!(
            !minutes.covers(&a, "files", "write_file", &s2, &args, 700),
            "expired"
        );
        let pattern = GrantScope::ArgsMatch {
            name: "path".into(),
            pattern: "/srv/docs/*".into(),
            minutes: 5,
        };
        let matching = Grant::new(
            "g".into(),
            a,
            "files",
            "write_file",
            &s1,
            &pattern,
            100,
            "cli",
            None,
        );
        assert!(matching.covers(&a, "files", "write_file", &s2, &args, 200));
        for other in [
            json!({"path": "/etc/passwd"}),
            json!({"path": 7}),
            json!({}),
        ] {
            assert!(
                !matching.covers(&a, "files", "write_file", &s2, &other, 200),
                "{other}"
            );
        }
        // Asked for a year: capped.
        let long = Grant::new(
            "g".into(),
            a,
            "files",
            "x",
            &s1,
            &GrantScope::Minutes(525_600),
            0,
            "cli",
            None,
        );
        assert_eq!(long.until, MAX_GRANT_SECS);
    }
}
