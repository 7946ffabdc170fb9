//! `audit`: show, verify, export the tamper-evident log.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Print the last entries (and follow new ones with -f).
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new entries.
        #[arg(short, long)]
        follow: bool,
    },
    /// Check the hash chain and the signed checkpoints; exit 1 naming the first bad entry.
    Verify {
        /// Also check against the checkpoint the relay witnessed (asks the running daemon;
        /// without one, uses the local copy in the home).
        #[arg(long)]
        witness: bool,
        /// Machine-readable output (the exit status is the same).
        #[arg(long)]
        json: bool,
    },
    /// Print entries as JSON lines for SIEM ingestion.
    Export {
        /// Only entries at or after this time: RFC 3339 (2026-11-22T00:00:00Z, or with an
        /// offset like +01:00) or a duration back from now (90s, 10m, 1h, 2d).
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

pub(crate) async fn audit(home: &Home, cmd: AuditCommand) -> anyhow::Result<()> {
    use nullport_audit as audit;
    let path = home.audit();
    if !path.exists() {
        bail!("no audit log at {} (the daemon writes it)", path.display());
    }
    match cmd {
        AuditCommand::Tail { lines, follow } => {
            let text = std::fs::read_to_string(&path)?;
            let all: Vec<&str> = text.lines().collect();
            for l in &all[all.len().saturating_sub(lines)..] {
                println!("{l}");
            }
            if follow {
                let mut offset = text.len() as u64;
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let len = std::fs::metadata(&path)?.len();
                    if len > offset {
                        use std::io::{Read, Seek};
                        let mut f = std::fs::File::open(&path)?;
                        f.seek(std::io::SeekFrom::Start(offset))?;
                        let mut more = String::new();
                        f.read_to_string(&mut more)?;
                        print!("{more}");
                        offset = len;
                    }
                }
            }
            Ok(())
        }
        AuditCommand::Export { since, .. } => {
            let since = since
                .as_deref()
                .map(|s| audit::time::parse_since(s, std::time::SystemTime::now()))
                .transpose()?;
            for entry in audit::entries(&path)? {
                let at = entry["ts"].as_str().and_then(audit::time::parse_rfc3339);
                if since.is_none_or(|s| at.is_some_and(|at| at >= s)) {
                    println!("{entry}");
                }
            }
            Ok(())
        }
        AuditCommand::Verify { witness, json } => {
            let node = node_id(home)?;
            let mut source = "";
            let witnessed = if witness {
                let (w, from) = match control(home, &ControlRequest::AuditWitness).await {
                    Ok((r, _)) if r.ok => (r.witness, "the relay"),
                    _ => (
                        std::fs::read(home.audit_witness())
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok()),
                        "the local copy (daemon not running: the relay's latest could be newer)",
                    ),
                };
                source = from;
                let w = w.ok_or_else(|| anyhow!("no witnessed checkpoint yet ({from})"))?;
                let cp = audit::witness::from_json(&w)?;
                let relay: RelaySpec = load_config(home)?
                    .relay
                    .ok_or_else(|| anyhow!("no relay in the config: cannot check the witness"))?
                    .parse()?;
                Some(verify_witness(home, &cp, &node, &relay)?)
            } else {
                None
            };
            let report = audit::verify(&path, &node, witnessed.as_ref())?;
            if json {
                let ok = report.problem.is_none() && !matches!(report.witness, Some(Err(_)));
                let out = serde_json::json!({
                    "ok": ok,
                    "entries": report.entries,
                    "checkpoints": report.checkpoints,
                    "last_checkpoint": report.last_checkpoint.as_ref().map(|c| c.seq),
                    "unsigned_tail": report.unsigned_tail,
                    "torn": report.torn_at.iter().map(|(f, l)| serde_json::json!({"file": f, "line": l})).collect::<Vec<_>>(),
                    "problem": report.problem.as_ref().map(|p| serde_json::json!({"file": p.file, "line": p.line, "reason": p.reason})),
                    "witness": report.witness.as_ref().map(|w| match w {
                        Ok(()) => serde_json::json!({"ok": true, "source": source}),
                        Err(e) => serde_json::json!({"ok": false, "source": source, "error": e}),
                    }),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                if !ok {
                    std::process::exit(1);
                }
                return Ok(());
            }
            for (file, line) in &report.torn_at {
                println!(
                    "note: {} line {line} is a torn write (a crash mid-append), not tampering",
                    file.display()
                );
            }
            if let Some(p) = &report.problem {
                println!(
                    "audit log FAILED at {} line {}: {}",
                    p.file.display(),
                    p.line,
                    p.reason
                );
                std::process::exit(1);
            }
            if let Some(Err(e)) = &report.witness {
                println!("audit log FAILED against the witness from {source}: {e}");
                std::process::exit(1);
            }
            println!(
                "audit log OK: {} entries, {} signed checkpoints (last at entry {}), {} newer entries not yet signed",
                report.entries,
                report.checkpoints,
                report
                    .last_checkpoint
                    .as_ref()
                    .map(|c| c.seq.to_string())
                    .unwrap_or_default(),
                report.unsigned_tail
            );
            match (&report.witness, witness) {
                (Some(Ok(())), _) => println!(
                    "witness: the checkpoint {} countersigned by the relay is in the log ({source})",
                    witnessed.map(|c| c.seq).unwrap_or(0)
                ),
                (_, false) => println!(
                    "note: without --witness, a cut-off tail after the last checkpoint cannot be detected"
                ),
                _ => {}
            }
            Ok(())
        }
    }
}

/// Checks a witnessed checkpoint against the relay that countersigned it: the lone relay's
/// key, or (a fleet node) any relay of the relay map kept in the home, which the node took
/// only under its pinned admin key.
fn verify_witness(
    home: &Home,
    cp: &nullport_protocol::relay_link::WitnessedCheckpoint,
    node: &nullport_protocol::NodeId,
    relay: &RelaySpec,
) -> anyhow::Result<nullport_audit::Checkpoint> {
    let keys: Vec<nullport_protocol::NodeId> = match relay {
        RelaySpec::Single(addr) => vec![addr.node_id],
        RelaySpec::Fleet(bootstrap) => {
            let mut keys = vec![bootstrap.relay];
            if let Ok(held) = nullport_relay::map_file::load(&home.relay_map())
                && held.map.admin == bootstrap.admin
            {
                keys.extend(held.map.relays.iter().map(|r| r.node_id));
            }
            keys
        }
    };
    let mut last = None;
    for key in &keys {
        match nullport_audit::witness::verify(cp, node, key) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || anyhow!("no relay key to check the witness with"),
        Into::into,
    ))
}
