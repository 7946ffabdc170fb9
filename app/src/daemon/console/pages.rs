//! The console's pages, rendered on the server from the daemon's state. Everything that
//! comes from outside (names, arguments, audit fields) is HTML-escaped here; the pages load
//! one local script and one local stylesheet and nothing else.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::daemon::State;
use crate::mcp::approvals::render::{html_escape, visible};

/// Text from outside, safe in a page: invisible and reordering characters shown as escapes,
/// then HTML-escaped.
fn esc(text: &str) -> String {
    html_escape(&visible(text))
}

/// The page around `body`: navigation, the stylesheet, the live-update script.
pub(crate) fn layout(title: &str, active: &str, node: &str, body: &str) -> String {
    layout_versioned(title, active, node, body, "")
}

/// As [`layout`], with the page's version: what its structure shows (the calls waiting, the
/// channels open). The live-update script replaces the page only when that changes, and
/// otherwise only refreshes the `data-live` values, so nothing moves under a person's cursor.
pub(crate) fn layout_versioned(
    title: &str,
    active: &str,
    node: &str,
    body: &str,
    version: &str,
) -> String {
    let mut nav = String::new();
    for (href, name) in [
        ("/", "Status"),
        ("/approvals", "Approvals"),
        ("/audit", "Audit"),
        ("/policy", "Policy"),
    ] {
        let class = if name == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{class}>{name}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} - nullport</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\">\
         <script src=\"/static/app.js\" defer></script></head>\
         <body><header><strong>nullport</strong> <code>{node}</code><nav>{nav}</nav>\
         <form method=\"post\" action=\"/logout\" class=\"logout\"><button>Log out</button></form></header>\
         <main id=\"main\" data-version=\"{version}\">{body}</main></body></html>",
        title = esc(title),
        node = esc(node),
        version = esc(version),
    )
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if d < Duration::from_secs(120) => format!("{} s ago", d.as_secs()),
        Ok(d) if d < Duration::from_secs(7200) => format!("{} min ago", d.as_secs() / 60),
        Ok(d) => format!("{} h ago", d.as_secs() / 3600),
        Err(_) => "now".into(),
    }
}

/// Relay link, peers with when they were last seen, live channels (each with a close button).
pub(crate) fn status(state: &State) -> String {
    let access = state.access();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Status</h1><table class=\"kv\"><tr><th>node</th><td><code>{}</code></td></tr>\
         <tr><th>relay</th><td><code>{}</code></td></tr>\
         <tr><th>link</th><td id=\"link\" data-live>{}</td></tr></table>",
        esc(&state.node.node_id().to_string()),
        esc(&state.relay.to_string()),
        esc(&state.node.state().to_string()),
    );
    let seen = state.channels.last_seen();
    body.push_str("<h2>Peers</h2><table><tr><th>alias</th><th>NodeId</th><th>last seen</th></tr>");
    for (alias, id) in access.trust.entries() {
        let last = seen
            .get(id)
            .map(|t| ago(*t))
            .unwrap_or_else(|| "not since start".into());
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(alias),
            esc(&id.to_string()),
            esc(&last)
        );
    }
    body.push_str("</table><h2>Channels</h2>");
    let mut ids: Vec<u64> = state.channels.with_each_id(|id, _| id);
    ids.sort_unstable();
    let version = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut rows = state.channels.with_each_id(|id, c| {
        let peer = access
            .trust
            .alias_of(&c.peer)
            .map(str::to_owned)
            .unwrap_or_else(|| c.peer.to_string());
        (
            c.opened,
            format!(
                "<tr class=\"channel\" data-peer=\"{peer}\" data-service=\"{service}\"><td>{dir}</td><td>{peer}</td><td>{service}</td>\
                 <td id=\"in-{id}\" data-live>{inb} B</td><td id=\"out-{id}\" data-live>{out} B</td><td id=\"age-{id}\" data-live>{age} s</td><td><form method=\"post\" action=\"/channels/{id}/close\">\
                 <button class=\"close\">Close</button></form></td></tr>",
                dir = c.direction.as_str(),
                peer = esc(&peer),
                service = esc(&c.service),
                inb = c.counters.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
                out = c.counters.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
                age = c.opened.elapsed().as_secs(),
            ),
        )
    });
    if rows.is_empty() {
        body.push_str("<p class=\"none\">No channel is open.</p>");
    } else {
        rows.sort_by_key(|(opened, _)| *opened);
        body.push_str("<table><tr><th></th><th>peer</th><th>service</th><th>in</th><th>out</th><th>age</th><th></th></tr>");
        for (_, row) in rows {
            body.push_str(&row);
        }
        body.push_str("</table>");
    }
    layout_versioned(
        "Status",
        "Status",
        &state.node.node_id().to_string(),
        &body,
        &version,
    )
}

/// Calls waiting (arguments shown), with approve and deny; the standing grants.
pub(crate) fn approvals(state: &State) -> String {
    let mut body = format!(
        "<h1>Approvals</h1><p class=\"hint\">A call not answered within {} s is denied.</p>",
        state.approvals.timeout().as_secs()
    );
    let pending = state.approvals.list();
    let grants = state.approvals.grants();
    let version = pending
        .iter()
        .map(|a| a.id.as_str())
        .chain(grants.iter().map(|g| g.id.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    if pending.is_empty() {
        body.push_str("<p class=\"none\" id=\"no-pending\">No tool call is waiting.</p>");
    }
    for a in pending {
        let who = match &a.caller_alias {
            Some(alias) => format!("{} <code>{}</code>", esc(alias), esc(&a.caller)),
            None => format!("<code>{}</code>", esc(&a.caller)),
        };
        let _ = write!(
            body,
            "<section class=\"pending\" id=\"approval-{id}\" data-id=\"{id}\"><h2>{service}/{tool}</h2>\
             <p>from {who}; waiting <span id=\"waited-{id}\" data-live>{waited}</span> s, denied in <span id=\"left-{id}\" class=\"expires\" data-live>{left}</span> s unless answered</p>\
             <pre class=\"args\">{args}</pre>{full}<p class=\"digest\">arguments sha256 <code>{digest}</code></p>\
             <form method=\"post\" action=\"/approvals/{id}\">\
             <label>Reason <input name=\"reason\" maxlength=\"200\"></label>\
             <label>Scope <select name=\"scope\"><option value=\"once\">this call</option>\
             <option value=\"session\">this caller's session</option>\
             <option value=\"minutes\">for minutes:</option><option value=\"args\">calls whose argument matches:</option></select></label>\
             <input name=\"minutes\" value=\"10\" size=\"4\" aria-label=\"minutes\">\
             <input name=\"arg_name\" placeholder=\"argument\" size=\"10\" aria-label=\"argument\">\
             <input name=\"arg_pattern\" placeholder=\"/srv/docs/*\" size=\"16\" aria-label=\"pattern\">\
             <button name=\"decision\" value=\"approve\" class=\"approve\">Approve</button>\
             <button name=\"decision\" value=\"deny\" class=\"deny\">Deny</button></form></section>",
            id = esc(&a.id),
            service = esc(&a.service),
            tool = esc(&a.tool),
            waited = a.waiting_secs,
            left = a.expires_in_secs,
            args = esc(&a.args),
            full = if a.shown_in_full {
                String::new()
            } else {
                format!(
                    "<details open class=\"args-full\"><summary>Shortened above: all the arguments</summary><pre>{}</pre></details>",
                    esc(&a.args_full)
                )
            },
            digest = esc(&a.args_digest),
        );
    }
    body.push_str("<h2>Standing grants</h2>");
    if grants.is_empty() {
        body.push_str("<p class=\"none\">None.</p>");
    } else {
        body.push_str("<table><tr><th>id</th><th>call</th><th>caller</th><th>covers</th><th>made by</th><th></th></tr>");
        for g in grants {
            let _ = write!(
                body,
                "<tr class=\"grant\"><td>{id}</td><td>{service}/{tool}</td><td><code>{caller}</code></td><td>{scope}</td><td>{by}</td>\
                 <td><form method=\"post\" action=\"/grants/{id}/revoke\"><button>Revoke</button></form></td></tr>",
                id = esc(&g.id),
                service = esc(&g.service),
                tool = esc(&g.tool),
                caller = esc(&g.caller.to_string()),
                scope = esc(&g.describe()),
                by = esc(&g.made_by),
            );
        }
        body.push_str("</table>");
    }
    layout_versioned(
        "Approvals",
        "Approvals",
        &state.node.node_id().to_string(),
        &body,
        &version,
    )
}

/// Filters of the audit page.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AuditFilter {
    caller: Option<String>,
    service: Option<String>,
    outcome: Option<String>,
}

/// Most audit entries shown at once.
const AUDIT_SHOWN: usize = 200;

/// The audit trail (newest first, filtered), and `verify` with the first bad line.
pub(crate) fn audit(state: &State, filter: &AuditFilter, verify: bool) -> String {
    let field = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (caller, service, outcome) = (
        field(&filter.caller),
        field(&filter.service),
        field(&filter.outcome),
    );
    let mut body = format!(
        "<h1>Audit trail</h1><form method=\"get\" action=\"/audit\" class=\"filter\">\
         <input name=\"caller\" placeholder=\"caller (NodeId or part)\" value=\"{}\">\
         <input name=\"service\" placeholder=\"service\" value=\"{}\">\
         <input name=\"outcome\" placeholder=\"outcome\" value=\"{}\">\
         <button>Filter</button></form>\
         <form method=\"post\" action=\"/audit/verify\"><button name=\"verify\" value=\"1\">Verify the log</button></form>",
        esc(caller.as_deref().unwrap_or("")),
        esc(service.as_deref().unwrap_or("")),
        esc(outcome.as_deref().unwrap_or("")),
    );
    let path = state.home.audit();
    if verify {
        // Sign what is there now, so the check covers every entry up to this moment.
        state.audit.checkpoint();
        match nullport_audit::verify(&path, &state.node.node_id(), None) {
            Ok(report) => match &report.problem {
                Some(p) => {
                    let _ = write!(
                        body,
                        "<p class=\"bad\" id=\"verify\">FAILED at {} line {}: {}</p>",
                        esc(&p.file.display().to_string()),
                        p.line,
                        esc(&p.reason)
                    );
                }
                None => {
                    let _ = write!(
                        body,
                        "<p class=\"good\" id=\"verify\">OK: {} entries, {} signed checkpoints, {} newer entries not yet signed</p>",
                        report.entries, report.checkpoints, report.unsigned_tail
                    );
                }
            },
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"bad\" id=\"verify\">{}</p>",
                    esc(&e.to_string())
                );
            }
        }
    }
    let entries = nullport_audit::entries(&path).unwrap_or_default();
    let matches = |e: &serde_json::Value, key: &str, want: &Option<String>| match want {
        None => true,
        Some(w) => e[key].as_str().is_some_and(|v| v.contains(w.as_str())),
    };
    body.push_str("<table class=\"audit\"><tr><th>time</th><th>event</th><th>caller</th><th>service</th><th>outcome</th><th>details</th></tr>");
    let shown = entries
        .iter()
        .rev()
        .filter(|e| {
            matches(e, "caller", &caller)
                && matches(e, "service", &service)
                && matches(e, "outcome", &outcome)
        })
        .take(AUDIT_SHOWN);
    for e in shown {
        let mut rest = e.clone();
        if let Some(m) = rest.as_object_mut() {
            for k in ["ts", "event", "caller", "service", "outcome", "prev", "seq"] {
                m.remove(k);
            }
        }
        let text = |k: &str| esc(e[k].as_str().unwrap_or(""));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            text("ts"),
            text("event"),
            text("caller"),
            text("service"),
            text("outcome"),
            esc(&rest.to_string())
        );
    }
    body.push_str("</table>");
    layout("Audit", "Audit", &state.node.node_id().to_string(), &body)
}

/// Who may use what: services, allow lists, MCP rules; allow and deny forms.
pub(crate) fn policy(state: &State, message: Option<&str>) -> String {
    let access = state.access();
    let mut body = String::from("<h1>Policy</h1>");
    if let Some(m) = message {
        let _ = write!(body, "<p class=\"message\" id=\"message\">{}</p>", esc(m));
    }
    body.push_str("<h2>Services</h2><table><tr><th>service</th><th>what</th><th>allowed</th></tr>");
    let files = state.files.read().ok();
    let allowed = |service: &str| -> String {
        files
            .as_ref()
            .and_then(|f| {
                f.policy
                    .entries()
                    .find(|(s, _)| *s == service)
                    .map(|(_, a)| a.join(", "))
            })
            .unwrap_or_default()
    };
    for (name, service) in &access.services {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"allowed\">{}</td></tr>",
            esc(name),
            esc(&service.to_string()),
            esc(&allowed(name))
        );
    }
    body.push_str("</table>");
    if let Some(f) = &files {
        let mcp = f.policy.mcp_services();
        if !mcp.is_empty() {
            body.push_str("<h2>MCP rules</h2><table><tr><th>service</th><th>caller</th><th>tools</th><th>resources</th><th>prompts</th></tr>");
            for s in mcp {
                for (caller, rules) in &s.callers {
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&s.service),
                        esc(caller),
                        esc(&rules.tools.join(", ")),
                        esc(&rules.resources.join(", ")),
                        esc(&rules.prompts.join(", "))
                    );
                }
            }
            body.push_str("</table>");
        }
    }
    body.push_str(
        "<h2>Change</h2><form method=\"post\" action=\"/policy\" class=\"edit\">\
         <input name=\"peer\" placeholder=\"alias or NodeId\" required>\
         <input name=\"service\" placeholder=\"service\" required>\
         <button name=\"action\" value=\"allow\">Allow</button>\
         <button name=\"action\" value=\"deny\">Deny</button></form>\
         <p class=\"hint\">The same change as <code>nullport allow</code> / <code>nullport deny</code>: written, checked, applied at once, audited.</p>",
    );
    layout("Policy", "Policy", &state.node.node_id().to_string(), &body)
}

/// A page that says why a request was refused.
pub(crate) fn refused(why: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nullport console</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><main><h1>Not allowed</h1><p>{}</p></main></body></html>",
        esc(why)
    )
}

/// Unix seconds now (for the page footers and the events).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
