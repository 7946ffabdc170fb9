//! The local console (`nullport console`): status, approvals, the audit trail and the policy
//! in a browser, served by the daemon on loopback only, off until asked for. Access is a
//! one-time token exchanged for a session cookie ([`auth`]); every page is rendered on the
//! server ([`pages`]); every change goes through the same code as the CLI and is audited.

mod auth;
mod pages;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State as Axum};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use nullport_audit::Event;
use serde::Deserialize;

use crate::daemon::{DaemonError, State};
use crate::mcp::approvals::{Answer, Decider, GrantScope};
use auth::{Auth, COOKIE, SESSION_TIME};

/// The console while it runs.
#[derive(Debug)]
pub(crate) struct Running {
    addr: SocketAddr,
    auth: Arc<Auth>,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<State>,
    auth: Arc<Auth>,
}

/// Starts the console on `127.0.0.1:port` (0: any free port) if it is not running, and
/// issues a new one-time token; returns the URL that logs in with it.
pub(crate) async fn open(state: &Arc<State>, port: u16) -> Result<String, DaemonError> {
    let running = state
        .console
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|r| (r.addr, r.auth.clone())));
    let (addr, auth) = match running {
        Some(r) => r,
        None => {
            let bind = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .map_err(|error| DaemonError::Console { addr: bind, error })?;
            let addr = listener
                .local_addr()
                .map_err(|error| DaemonError::Console { addr: bind, error })?;
            let auth = Arc::new(Auth::new(addr.port()));
            let ctx = Ctx {
                state: state.clone(),
                auth: auth.clone(),
            };
            let app = router(ctx);
            state.spawn_job(serve::serve(listener, app));
            if let Ok(mut c) = state.console.lock() {
                *c = Some(Running {
                    addr,
                    auth: auth.clone(),
                });
            }
            state
                .console_url
                .send_replace(Some(format!("http://{addr}")));
            tracing::info!(%addr, "console listening on loopback");
            (addr, auth)
        }
    };
    let token = auth.issue();
    Ok(format!("http://{addr}/login?token={token}"))
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", post(decide))
        .route("/grants/{id}/revoke", post(revoke_grant))
        .route("/channels/{id}/close", post(close_channel))
        .route("/audit", get(audit))
        .route("/audit/verify", post(verify_audit))
        .route("/logout", post(logout))
        .route("/policy", get(policy).post(edit_policy))
        .route("/events", get(events))
        .route("/login", get(login))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(|| async { (StatusCode::NOT_FOUND, Html(pages::refused("No such page."))) })
        .layer(middleware::from_fn_with_state(ctx.clone(), gate))
        .with_state(ctx)
}

/// Every request: the Host must be this console; pages need a session; changes need the
/// session and this console as their origin. Every response: no caching, no framing, a
/// strict content security policy, no CORS.
async fn gate(Axum(ctx): Axum<Ctx>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let path = request.uri().path().to_owned();
    let refusal = if !ctx.auth.host_ok(headers) {
        Some((
            StatusCode::MISDIRECTED_REQUEST,
            "This console answers only to its own address (127.0.0.1).",
        ))
    } else if path == "/login" || path == "/favicon.ico" || path.starts_with("/static/") {
        None
    } else if !ctx.auth.has_session(headers) {
        Some((
            StatusCode::UNAUTHORIZED,
            "Open the address `nullport console` printed (it works once; run it again for a new one).",
        ))
    } else if request.method() != Method::GET && !ctx.auth.same_origin(headers) {
        Some((
            StatusCode::FORBIDDEN,
            "Changes are taken only from this console's own pages.",
        ))
    } else {
        None
    };
    let mut response = match refusal {
        Some((code, why)) => (code, Html(pages::refused(why))).into_response(),
        None => next.run(request).await,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[derive(Deserialize)]
struct LoginQuery {
    token: String,
}

async fn login(Axum(ctx): Axum<Ctx>, Query(q): Query<LoginQuery>) -> Response {
    match ctx.auth.exchange(&q.token) {
        Some(session) => {
            ctx.state.audit.record(Event::Console {
                action: "login".into(),
                detail: format!(
                    "one-time token exchanged for session {}",
                    &session[..8.min(session.len())]
                ),
            });
            let cookie = format!(
                "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                SESSION_TIME.as_secs()
            );
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => {
            ctx.state.audit.record(Event::Console {
                action: "login refused".into(),
                detail: "a login link that was not valid, used or expired".into(),
            });
            (
                StatusCode::FORBIDDEN,
                Html(pages::refused(
                    "This login link was already used, has expired or is not valid: run `nullport console` again for a new one.",
                )),
            )
                .into_response()
        }
    }
}

/// The session, as named in the audit log (a prefix of its id: enough to tell sessions
/// apart, not enough to use one).
fn who(ctx: &Ctx, headers: &axum::http::HeaderMap) -> String {
    match ctx.auth.session(headers) {
        Some(id) => format!("session {}", &id[..8.min(id.len())]),
        None => "no session".into(),
    }
}

async fn logout(Axum(ctx): Axum<Ctx>, headers: axum::http::HeaderMap) -> Response {
    ctx.state.audit.record(Event::Console {
        action: "logout".into(),
        detail: who(&ctx, &headers),
    });
    ctx.auth.end_session(&headers);
    (
        StatusCode::OK,
        Html(pages::refused(
            "Logged out. Run `nullport console` for a new login link.",
        )),
    )
        .into_response()
}

async fn verify_audit(Axum(ctx): Axum<Ctx>, headers: axum::http::HeaderMap) -> Html<String> {
    ctx.state.audit.record(Event::Console {
        action: "verify audit log".into(),
        detail: who(&ctx, &headers),
    });
    let state = ctx.state.clone();
    let page = tokio::task::spawn_blocking(move || {
        pages::audit(&state, &pages::AuditFilter::default(), true)
    })
    .await;
    Html(page.unwrap_or_else(|_| pages::refused("The audit page failed to render.")))
}

async fn status(Axum(ctx): Axum<Ctx>) -> Html<String> {
    Html(pages::status(&ctx.state))
}

async fn approvals(Axum(ctx): Axum<Ctx>) -> Html<String> {
    Html(pages::approvals(&ctx.state))
}

async fn audit(Axum(ctx): Axum<Ctx>, Query(filter): Query<pages::AuditFilter>) -> Html<String> {
    let state = ctx.state.clone();
    // Reading (and verifying) the log is file I/O: off the async threads.
    let page = tokio::task::spawn_blocking(move || pages::audit(&state, &filter, false)).await;
    Html(page.unwrap_or_else(|_| pages::refused("The audit page failed to render.")))
}

async fn policy(Axum(ctx): Axum<Ctx>) -> Html<String> {
    Html(pages::policy(&ctx.state, None))
}

#[derive(Deserialize)]
struct Decision {
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    arg_name: String,
    #[serde(default)]
    arg_pattern: String,
}

async fn decide(
    Axum(ctx): Axum<Ctx>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Form(d): Form<Decision>,
) -> Response {
    let approve = d.decision == "approve";
    let minutes = d.minutes.trim().parse::<u32>().unwrap_or(10).clamp(1, 1440);
    let grant = match (approve, d.scope.as_str()) {
        (true, "session") => Some(GrantScope::Session),
        (true, "minutes") => Some(GrantScope::Minutes(minutes)),
        (true, "args") if !d.arg_name.trim().is_empty() && !d.arg_pattern.trim().is_empty() => {
            Some(GrantScope::ArgsMatch {
                name: d.arg_name.trim().to_owned(),
                pattern: d.arg_pattern.trim().to_owned(),
                minutes,
            })
        }
        _ => None,
    };
    let reason = Some(d.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let answered = ctx.state.approvals.answer(
        &id,
        Answer {
            approve,
            by: Decider::Console,
            reason,
            grant,
        },
    );
    match answered {
        Ok(a) => {
            ctx.state.audit.record(Event::Console {
                action: if approve { "approve" } else { "deny" }.into(),
                detail: format!(
                    "{} {}/{} of {} ({})",
                    a.id,
                    a.service,
                    a.tool,
                    a.caller,
                    who(&ctx, &headers)
                ),
            });
            Redirect::to("/approvals").into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, Html(pages::refused(&e.to_string()))).into_response(),
    }
}

async fn revoke_grant(
    Axum(ctx): Axum<Ctx>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match ctx.state.approvals.revoke_grant(&id, Decider::Console) {
        Ok(g) => {
            ctx.state.audit.record(Event::Console {
                action: "revoke grant".into(),
                detail: format!(
                    "{} {}/{} of {} ({})",
                    g.id,
                    g.service,
                    g.tool,
                    g.caller,
                    who(&ctx, &headers)
                ),
            });
            Redirect::to("/approvals").into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, Html(pages::refused(&e.to_string()))).into_response(),
    }
}

async fn close_channel(
    Axum(ctx): Axum<Ctx>,
    headers: axum::http::HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    match ctx.state.channels.close_one(id) {
        Some((peer, service)) => {
            ctx.state.audit.record(Event::Console {
                action: "close channel".into(),
                detail: format!("{service} with {peer} ({})", who(&ctx, &headers)),
            });
            Redirect::to("/").into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Html(pages::refused("That channel has already ended.")),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct PolicyEdit {
    action: String,
    peer: String,
    service: String,
}

async fn edit_policy(
    Axum(ctx): Axum<Ctx>,
    headers: axum::http::HeaderMap,
    Form(e): Form<PolicyEdit>,
) -> Html<String> {
    let by = who(&ctx, &headers);
    let state = ctx.state.clone();
    let (peer, service) = (e.peer.trim().to_owned(), e.service.trim().to_owned());
    let allow = e.action == "allow";
    // The CLI's code path: under the home's edit lock, checked, written; then reloaded.
    let home = state.home.clone();
    let (p, s) = (peer.clone(), service.clone());
    let edited = tokio::task::spawn_blocking(move || {
        let _lock = home.lock_edits()?;
        if allow {
            crate::edit::allow(&home, &p, &s).map(|_| format!("{p} may now use {s}"))
        } else {
            crate::edit::deny(&home, &p, &s).map(|removed| {
                format!(
                    "{p} may no longer use {s} (removed: {})",
                    removed.join(", ")
                )
            })
        }
    })
    .await;
    let message = match edited {
        Ok(Ok(done)) => {
            state.audit.record(Event::Console {
                action: if allow { "allow" } else { "deny" }.into(),
                detail: format!("{peer} {service} ({by})"),
            });
            match state.reload() {
                Ok(()) => done,
                Err(e) => format!("{done}, but the daemon cannot load the configuration: {e}"),
            }
        }
        Ok(Err(e)) => format!("not changed: {e}"),
        Err(_) => "not changed: the edit failed".into(),
    };
    Html(pages::policy(&state, Some(&message)))
}

/// Server-sent events: one whenever approvals change, and a tick every two seconds (channels,
/// bytes, the link).
async fn events(
    Axum(ctx): Axum<Ctx>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let receiver = ctx.state.approvals.subscribe();
    let tick = tokio::time::interval(Duration::from_secs(2));
    let stream = futures_util::stream::unfold((receiver, tick), |(mut rx, mut tick)| async move {
        let data = tokio::select! {
            event = rx.recv() => match event {
                Ok(e) => serde_json::to_string(&e).unwrap_or_default(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "lagged".into(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
            _ = tick.tick() => format!("{{\"tick\":{}}}", pages::unix_now()),
        };
        Some((Ok(SseEvent::default().data(data)), (rx, tick)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
        .into_response()
}
