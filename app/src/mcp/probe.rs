//! Asking a stdio MCP server which tools it has (initialize, then `tools/list`, every page),
//! so `nullport mcp allow` can warn about a rule that names a tool the server does not list.
//! The server runs as the daemon would run it: a clean environment, its own process group,
//! killed when the answer is in or the time is up.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long the server has to answer.
const PROBE_TIME: Duration = Duration::from_secs(15);
/// Pages of `tools/list` followed at most.
const MAX_PAGES: usize = 20;

/// Why the tools could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The command did not start.
    #[error("the server did not start: {0}")]
    Spawn(std::io::ErrorKind),
    /// No complete answer in time.
    #[error("no answer to tools/list within {} s", PROBE_TIME.as_secs())]
    Timeout,
    /// The server ended or answered something else.
    #[error("the server did not answer tools/list ({0})")]
    Protocol(&'static str),
}

/// The names of the tools the stdio MCP server `command` lists, started with `env` only.
pub async fn list_tools(
    command: &[String],
    env: &[(String, String)],
) -> Result<Vec<String>, ProbeError> {
    let (program, args) = command
        .split_first()
        .ok_or(ProbeError::Protocol("empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProbeError::Spawn(e.kind()))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ProbeError::Protocol("no pipes"));
    };
    let talk = async {
        let mut lines = BufReader::new(stdout).lines();
        let send = |message: Value| {
            let mut line = message.to_string();
            line.push('\n');
            line
        };
        let hello = send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "nullport", "version": env!("CARGO_PKG_VERSION")}}}),
        );
        stdin
            .write_all(hello.as_bytes())
            .await
            .map_err(|_| ProbeError::Protocol("closed its input"))?;
        answer(&mut lines, 0).await?;
        let ready = send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        stdin
            .write_all(ready.as_bytes())
            .await
            .map_err(|_| ProbeError::Protocol("closed its input"))?;
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let ask = send(
                json!({"jsonrpc": "2.0", "id": page, "method": "tools/list", "params": params}),
            );
            stdin
                .write_all(ask.as_bytes())
                .await
                .map_err(|_| ProbeError::Protocol("closed its input"))?;
            let result = answer(&mut lines, page).await?;
            let tools = result["tools"]
                .as_array()
                .ok_or(ProbeError::Protocol("no tools in the answer"))?;
            names.extend(
                tools
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned)),
            );
            cursor = result["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(names)
    };
    let listed = tokio::time::timeout(PROBE_TIME, talk)
        .await
        .map_err(|_| ProbeError::Timeout)?;
    crate::services::process_group::kill(&child);
    let _ = child.start_kill();
    listed
}

/// Reads lines until the response to request `id`; its `result`.
async fn answer(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    id: usize,
) -> Result<Value, ProbeError> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|_| ProbeError::Protocol("unreadable output"))?
            .ok_or(ProbeError::Protocol("it exited"))?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if message["id"] != json!(id) {
            continue;
        }
        if message.get("error").is_some() {
            return Err(ProbeError::Protocol("it answered with an error"));
        }
        return Ok(message["result"].clone());
    }
}

/// The entries of `patterns` that match none of `tools` (names or `*` globs).
pub fn unmatched<'a>(patterns: &'a [String], tools: &[String]) -> Vec<&'a str> {
    patterns
        .iter()
        .filter(|p| {
            !tools
                .iter()
                .any(|t| nullport_keyring::pattern::glob_match(p, t))
        })
        .map(String::as_str)
        .collect()
}
