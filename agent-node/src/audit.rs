//! The node's audit log: one JSON object a line (stable field names, RFC 3339 UTC times).
//! Every channel decision and every MCP decision goes through [`Audit`]; the audit issue
//! adds the hash chain and signed checkpoints behind this same interface.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nullport_protocol::NodeId;
use serde_json::{Value, json};

use crate::mcp::Session;
use crate::mcp::firewall::Decision;

/// Appends audit events to a file (or nowhere, for embedding without a home).
#[derive(Clone, Default)]
pub struct Audit {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.file.is_some())
            .finish()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time since the Unix epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
}

impl Audit {
    /// Appends to `path` (created 0600).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Audit {
            file: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// An audit sink that drops everything.
    pub fn disabled() -> Audit {
        Audit::default()
    }

    fn write(&self, mut event: Value) {
        let Some(file) = &self.file else { return };
        event["ts"] = Value::String(rfc3339(SystemTime::now()));
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut f) = file.lock()
            && let Err(e) = f.write_all(&line)
        {
            tracing::error!("audit log write failed: {e}");
        }
    }

    /// A channel decision (accept or deny) at the callee.
    pub fn channel(&self, peer: &NodeId, service: &str, outcome: &str, rule: &str) {
        self.write(json!({ "event": "channel", "caller": peer.to_string(), "service": service, "outcome": outcome, "rule": rule }));
    }

    /// An MCP decision.
    pub fn mcp(&self, session: &Session, d: &Decision, latency: Duration) {
        self.write(json!({
            "event": "mcp",
            "caller": session.caller.to_string(),
            "service": session.service,
            "method": d.method,
            "target": d.target,
            "args_sha256": d.args_digest,
            "outcome": d.outcome,
            "reason": d.reason,
            "latency_us": latency.as_micros() as u64,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(1_795_305_600, 5_000)),
            "2026-11-22T00:00:00.000005Z"
        );
    }
}
