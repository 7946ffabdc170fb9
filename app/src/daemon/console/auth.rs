//! Who may use the console, and from where: a one-time token (printed by `nullport console`)
//! is exchanged for a session cookie (HttpOnly, SameSite=Strict); every request must name
//! this console's own address in `Host` (a DNS-rebinding page names its own); every change
//! must come from this console's own pages (`Sec-Fetch-Site: same-origin`, or an `Origin`
//! equal to this console's). Tokens and sessions are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "np_console";
/// How long a session lasts.
pub(crate) const SESSION_TIME: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time token may wait to be used.
pub(crate) const TOKEN_TIME: Duration = Duration::from_secs(10 * 60);

/// The console's credentials.
#[derive(Debug)]
pub(crate) struct Auth {
    port: u16,
    one_time: Mutex<Option<(String, Instant)>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

fn random_hex() -> String {
    let mut raw = [0u8; 32];
    let _ = getrandom::getrandom(&mut raw);
    nullport_protocol::hex::encode(&raw)
}

/// Equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    pub(crate) fn new(port: u16) -> Auth {
        Auth {
            port,
            one_time: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// A new one-time token (the previous one, if unused, no longer works).
    pub(crate) fn issue(&self) -> String {
        let token = random_hex();
        if let Ok(mut t) = self.one_time.lock() {
            *t = Some((token.clone(), Instant::now()));
        }
        token
    }

    /// Trades the one-time token for a new session id. A wrong token does not spend it
    /// (256 bits are not guessed), so no one can keep the owner out by trying.
    pub(crate) fn exchange(&self, token: &str) -> Option<String> {
        let mut one_time = self.one_time.lock().ok()?;
        let held = one_time.as_ref()?;
        if !same(&held.0, token) {
            return None;
        }
        let fresh = held.1.elapsed() <= TOKEN_TIME;
        *one_time = None;
        drop(one_time);
        if !fresh {
            return None;
        }
        let session = random_hex();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, since| since.elapsed() < SESSION_TIME);
            s.insert(session.clone(), Instant::now());
        }
        Some(session)
    }

    /// The live session the request's cookie names, if any.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().ok()?;
        sessions
            .iter()
            .find(|(known, since)| same(known, &id) && since.elapsed() < SESSION_TIME)
            .map(|(known, _)| known.clone())
    }

    /// Whether the request carries a live session cookie.
    pub(crate) fn has_session(&self, headers: &HeaderMap) -> bool {
        self.session(headers).is_some()
    }

    /// Ends the session the request's cookie names.
    pub(crate) fn end_session(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut s)) = (cookie(headers, COOKIE), self.sessions.lock()) {
            s.retain(|known, _| !same(known, &id));
        }
    }

    /// The `Host` values this console answers to.
    fn hosts(&self) -> [String; 3] {
        [
            format!("127.0.0.1:{}", self.port),
            format!("localhost:{}", self.port),
            format!("[::1]:{}", self.port),
        ]
    }

    /// Whether `Host` names this console (anything else: another site's page, via DNS).
    pub(crate) fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get("host").and_then(|h| h.to_str().ok()) else {
            return false;
        };
        self.hosts().iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether a state-changing request comes from this console's own pages.
    pub(crate) fn same_origin(&self, headers: &HeaderMap) -> bool {
        if let Some(site) = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok()) {
            return site == "same-origin";
        }
        match headers.get("origin").and_then(|h| h.to_str().ok()) {
            Some(origin) => self
                .hosts()
                .iter()
                .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}"))),
            None => false,
        }
    }
}

/// The value of cookie `name`, if the request has it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_works_once_and_makes_a_session() {
        let auth = Auth::new(8123);
        let token = auth.issue();
        assert_eq!(token.len(), 64);
        assert!(
            auth.exchange("0".repeat(64).as_str()).is_none(),
            "a wrong token spends it"
        );
        let token = auth.issue();
        let session = auth.exchange(&token).unwrap();
        assert!(auth.exchange(&token).is_none(), "replayed");
        assert!(auth.has_session(&headers(&[("cookie", &format!("a=b; {COOKIE}={session}"))])));
        assert!(!auth.has_session(&headers(&[("cookie", &format!("{COOKIE}=x{session}"))])));
        assert!(!auth.has_session(&HeaderMap::new()));
        let h = headers(&[("cookie", &format!("{COOKIE}={session}"))]);
        auth.end_session(&h);
        assert!(!auth.has_session(&h), "logged out");
        // A new token replaces an unused one.
        let old = auth.issue();
        let _new = auth.issue();
        assert!(auth.exchange(&old).is_none());
    }

    #[test]
    fn host_and_origin_must_be_this_console() {
        let auth = Auth::new(8123);
        assert!(auth.host_ok(&headers(&[("host", "127.0.0.1:8123")])));
        assert!(auth.host_ok(&headers(&[("host", "localhost:8123")])));
        assert!(!auth.host_ok(&headers(&[("host", "evil.example:8123")])));
        assert!(!auth.host_ok(&headers(&[("host", "127.0.0.1:8124")])));
        assert!(!auth.host_ok(&HeaderMap::new()));
        assert!(auth.same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!auth.same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!auth.same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(auth.same_origin(&headers(&[("origin", "http://127.0.0.1:8123")])));
        assert!(!auth.same_origin(&headers(&[("origin", "http://evil.example")])));
        assert!(!auth.same_origin(&headers(&[("origin", "null")])));
        assert!(!auth.same_origin(&HeaderMap::new()));
    }
}
