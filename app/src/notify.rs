//! Telling people a call waits for them: a webhook (`[approvals] webhook`: a JSON POST when a
//! call waits and when it is decided, retried with backoff) and a desktop notification
//! (`notify-send`, where it exists). A notification carries no secret (no arguments, no
//! reason, no console token) and decides nothing: a webhook that fails or answers anything
//! approves nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::mcp::approvals::ApprovalEvent;

/// Attempts per notification (the first, then after 1, 2 and 4 s).
const ATTEMPTS: u32 = 4;
/// Time for one attempt.
const ATTEMPT_TIME: Duration = Duration::from_secs(5);

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// Not a URL.
    #[error("webhook {0:?} is not a URL")]
    NotUrl(String),
    /// Cleartext to another machine.
    #[error("webhook {0:?}: use https:// (http:// only on loopback)")]
    Cleartext(String),
}

/// A checked webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook(reqwest::Url);

impl Webhook {
    /// `https://...` anywhere, or `http://` to a loopback address.
    pub fn parse(text: &str) -> Result<Webhook, WebhookError> {
        let url = reqwest::Url::parse(text).map_err(|_| WebhookError::NotUrl(text.to_owned()))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" if url.host().is_some() => Ok(Webhook(url)),
            "http" if loopback => Ok(Webhook(url)),
            "http" => Err(WebhookError::Cleartext(text.to_owned())),
            _ => Err(WebhookError::NotUrl(text.to_owned())),
        }
    }
}

/// The body of a webhook POST (schema version 1, `docs/console.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Schema version.
    pub version: u32,
    /// `approval.pending` or `approval.decided`.
    pub event: &'static str,
    /// The node the call waits on.
    pub node: String,
    /// The approval id.
    pub id: String,
    /// The caller's NodeId.
    pub caller: String,
    /// Its alias on this node.
    pub caller_alias: Option<String>,
    /// The MCP service.
    pub service: String,
    /// The tool.
    pub tool: String,
    /// SHA-256 of the arguments (the arguments themselves are not sent).
    pub args_sha256: String,
    /// For `pending`: seconds until it is denied unanswered.
    pub expires_in_secs: Option<u64>,
    /// For `decided`: approved, denied, timed out, granted.
    pub outcome: Option<String>,
    /// For `decided`: cli, console, timeout, grant ID.
    pub by: Option<String>,
    /// The local console's approvals page, if the console runs (no token in it).
    pub console: Option<String>,
}

impl Notification {
    /// The notification for `event` (none for grant events).
    pub fn of(event: &ApprovalEvent, node: &str, console: Option<String>) -> Option<Notification> {
        let console = console.map(|c| format!("{c}/approvals"));
        match event {
            ApprovalEvent::Pending { approval } => Some(Notification {
                version: 1,
                event: "approval.pending",
                node: node.to_owned(),
                id: approval.id.clone(),
                caller: approval.caller.clone(),
                caller_alias: approval.caller_alias.clone(),
                service: approval.service.clone(),
                tool: approval.tool.clone(),
                args_sha256: approval.args_digest.clone(),
                expires_in_secs: Some(approval.expires_in_secs),
                outcome: None,
                by: None,
                console,
            }),
            ApprovalEvent::Decided {
                id,
                caller,
                service,
                tool,
                args_digest,
                resolution,
            } => Some(Notification {
                version: 1,
                event: "approval.decided",
                node: node.to_owned(),
                id: id.clone(),
                caller: caller.clone(),
                caller_alias: None,
                service: service.clone(),
                tool: tool.clone(),
                args_sha256: args_digest.clone(),
                expires_in_secs: None,
                outcome: Some(resolution.outcome.clone()),
                by: Some(resolution.by.clone()),
                console,
            }),
            _ => None,
        }
    }
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The webhook, if set.
    pub webhook: Option<Webhook>,
    /// Desktop notifications (if `notify-send` exists).
    pub desktop: bool,
}

/// Sends `notification` to `webhook`, retrying with backoff; true once delivered (2xx).
pub async fn post(
    client: &reqwest::Client,
    webhook: &Webhook,
    notification: &Notification,
) -> bool {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(webhook.0.clone())
            .timeout(ATTEMPT_TIME)
            .json(notification)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                tracing::debug!(attempt, status = %r.status(), "webhook refused the notification")
            }
            Err(e) => tracing::debug!(attempt, "webhook unreachable: {e}"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(
        id = %notification.id,
        event = notification.event,
        "webhook {} did not take the notification after {ATTEMPTS} attempts",
        webhook.0
    );
    false
}

/// A desktop notification for a waiting call, where `notify-send` exists.
async fn desktop(notification: &Notification) {
    if notification.event != "approval.pending" || !on_path("notify-send") {
        return;
    }
    let who = notification
        .caller_alias
        .clone()
        .unwrap_or_else(|| notification.caller.clone());
    let body = format!(
        "{who} wants {}/{}: nullport approve {} (or nullport deny {})",
        notification.service, notification.tool, notification.id, notification.id
    );
    let run = tokio::process::Command::new("notify-send")
        .args(["--app-name=nullport", "nullport: a tool call waits for you"])
        .arg(body)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let _ = tokio::time::timeout(ATTEMPT_TIME, run).await;
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Sends a notification for every approval event from `events`, to the targets `targets()`
/// names at that moment (so a reload applies), until the events end.
pub async fn run(
    mut events: tokio::sync::broadcast::Receiver<ApprovalEvent>,
    node: String,
    targets: Arc<dyn Fn() -> Targets + Send + Sync>,
    console: Arc<dyn Fn() -> Option<String> + Send + Sync>,
) {
    // No redirects: a webhook on loopback must not send its notifications elsewhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut sending = JoinSet::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            Some(_) = sending.join_next() => continue,
        };
        let event = match event {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} approval notifications skipped (too many at once)");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(notification) = Notification::of(&event, &node, console()) else {
            continue;
        };
        let targets = targets();
        let client = client.clone();
        sending.spawn(async move {
            if targets.desktop {
                desktop(&notification).await;
            }
            if let Some(webhook) = &targets.webhook {
                post(&client, webhook, &notification).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_https_or_loopback() {
        assert!(Webhook::parse("https://hooks.example.net/np").is_ok());
        assert!(Webhook::parse("http://127.0.0.1:9/hook").is_ok());
        assert!(Webhook::parse("http://[::1]:9/hook").is_ok());
        assert!(Webhook::parse("http://localhost:9/hook").is_ok());
        assert_eq!(
            Webhook::parse("http://hooks.example.net/np"),
            Err(WebhookError::Cleartext(
                "http://hooks.example.net/np".into()
            ))
        );
        assert_eq!(
            Webhook::parse("ftp://x/y"),
            Err(WebhookError::NotUrl("ftp://x/y".into()))
        );
        assert_eq!(
            Webhook::parse("not a url"),
            Err(WebhookError::NotUrl("not a url".into()))
        );
    }
}
