//! The server's side of the firewall: what a server sends, classified strictly, answers
//! matched to the caller's requests in flight, lists filtered and checked against the pins.

use serde_json::{Map, Value};

use super::ids::{FromServer, classify, id_key, loose_id_key, respelled_answer};
use super::{Firewall, ListKind, encode};
use nullport_keyring::pattern::{PatternKind, any_matches};

impl Firewall {
    /// Filters one message (one line) from the server; `None` drops it.
    pub fn from_server(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        let Ok(Value::Object(mut msg)) = serde_json::from_slice::<Value>(line) else {
            return None;
        };
        let Some(kind) = classify(&msg) else {
            // A `method` that is not a string, a request with a result, an answer with both
            // or neither: an SDK might take it for an answer; nothing here would check it.
            tracing::warn!("dropping an ambiguous message from the MCP server");
            return None;
        };
        let id_key = msg.get("id").and_then(id_key);
        let is_request = matches!(kind, FromServer::Request);
        // (An error about a line that could not be read has id null: it passes.)
        let unreadable = msg.get("id") == Some(&Value::Null) && !msg.contains_key("result");
        let sent = id_key
            .as_ref()
            .and_then(|k| self.forwarded.get(k))
            .map(|f| f.sent);
        if sent == Some(false) {
            // An answer to a call still waiting for a person: the server never had it.
            tracing::warn!("dropping a server answer to a call it was not sent");
            return None;
        }
        let passes = is_request
            || unreadable
            || id_key
                .as_ref()
                .is_some_and(|k| self.forwarded.remove(k).is_some());
        if !passes {
            // An answer to nothing the caller asked, or a second answer: it would reach the
            // client unfiltered. Dropped; if it answers a request in flight under another
            // spelling of its id (`"1"` for `1`, which the SDKs accept), that request gets an
            // error instead of waiting forever.
            let sent = msg.get("id").cloned().unwrap_or(Value::Null);
            tracing::warn!(id = %sent, "dropping a server answer to no request in flight");
            let loose = loose_id_key(&sent)?;
            let (key, original) = self
                .forwarded
                .iter()
                .find(|(_, f)| f.sent && loose_id_key(&f.id).as_ref() == Some(&loose))
                .map(|(k, f)| (k.clone(), f.id.clone()))?;
            self.forwarded.remove(&key);
            self.pending_calls.remove(&key);
            self.pending_lists.remove(&key);
            return Some(respelled_answer(&original, &sent));
        }
        if let Some(key) = id_key {
            if is_request {
                self.server_requests.insert(key);
            } else {
                self.pending_calls.remove(&key);
                if let Some(kind) = self.pending_lists.remove(&key)
                    && let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut)
                {
                    self.filter_list(kind, result);
                }
            }
        }
        Some(encode(&Value::Object(msg)))
    }

    fn filter_list(&self, kind: ListKind, result: &mut Map<String, Value>) {
        let rules = &self.grant.rules;
        let (field, key) = match kind {
            ListKind::Tools => ("tools", "name"),
            ListKind::Prompts => ("prompts", "name"),
            ListKind::Resources => ("resources", "uri"),
            ListKind::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        };
        let allowed = |value: &str| match kind {
            ListKind::Tools => any_matches(PatternKind::Glob, &rules.tools, value),
            ListKind::Prompts => any_matches(PatternKind::Glob, &rules.prompts, value),
            ListKind::Resources => any_matches(PatternKind::UriPrefix, &rules.resources, value),
            // A template (`file:///srv/{path}`) is listed when its fixed part is covered.
            ListKind::ResourceTemplates => {
                let fixed = value.split('{').next().unwrap_or_default();
                any_matches(PatternKind::UriPrefix, &rules.resources, fixed)
            }
        };
        if let Some(Value::Array(items)) = result.get_mut(field) {
            // Every tool the server presents is checked against its pin first (so the first
            // list pins them all, allowed to this caller or not).
            if let (ListKind::Tools, Some((pins, scope))) = (kind, &self.pins) {
                pins.check_list(scope, items);
            }
            items.retain(|item| item.get(key).and_then(Value::as_str).is_some_and(allowed));
        }
    }
}
