//! `mcp pins`, `mcp pin`: pinned tool manifests (`nullport::mcp::pins`).

use super::*;

/// `println!` of text that holds names a server chose (tools, descriptions): made
/// [`printable`].
macro_rules! out {
    ($($arg:tt)*) => {
        println!("{}", printable(&format!($($arg)*)))
    };
}

/// `mcp pins`: what is pinned and held, per scope, and what changed.
pub(crate) fn show(home: &Home, json: bool) -> anyhow::Result<()> {
    let pins = nullport::mcp::pins::Pins::load(home.pins(), nullport::audit::Audit::disabled())?;
    let snapshot = pins.snapshot();
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
        return Ok(());
    }
    if snapshot.is_empty() {
        println!(
            "no tool manifests pinned yet (they are pinned the first time a service lists its tools)"
        );
    }
    for (scope, p) in snapshot {
        out!("{scope}: {} pinned, {} held", p.pinned.len(), p.held.len());
        for (tool, held) in &p.held {
            out!(
                "  HELD {tool}: {}",
                match &held.pinned {
                    Some(_) => "changed since it was pinned",
                    None => "new since the tools were pinned",
                }
            );
            // Every field that differs (a field that is gone shows as null).
            let mut fields: Vec<&String> = held
                .presented
                .tool
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .chain(
                    held.pinned
                        .iter()
                        .flat_map(|m| m.tool.as_object())
                        .flat_map(|o| o.keys()),
                )
                .collect();
            fields.sort();
            fields.dedup();
            for field in fields {
                let was = held.pinned.as_ref().map(|m| m.tool[field.as_str()].clone());
                let now = &held.presented.tool[field.as_str()];
                if was.as_ref() != Some(now) {
                    if let Some(was) = was {
                        out!("    {field} was: {was}");
                    }
                    out!("    {field} now: {now}");
                }
            }
            out!("    accept with: nullport mcp pin {scope} {tool} --accept");
        }
    }
    Ok(())
}

/// `mcp pin SCOPE TOOL --accept`: pins the held version of `tool` (through the daemon, or
/// on the file when none runs).
pub(crate) async fn accept(home: &Home, scope: String, tool: String) -> anyhow::Result<()> {
    // A caller-side scope names the peer: its alias becomes the NodeId pins are kept
    // under.
    let scope = match scope.split_once('/') {
        Some((peer, service)) => {
            let id = TrustStore::load(&home.trust())?.resolve(peer)?;
            format!("{id}/{service}")
        }
        None => scope,
    };
    match control(
        home,
        &ControlRequest::AcceptPin {
            scope: scope.clone(),
            tool: tool.clone(),
        },
    )
    .await
    {
        Ok((r, _)) if r.ok => {}
        Ok((r, _)) => bail!("{}", r.error.unwrap_or_default()),
        Err(_) => {
            // No daemon: the same change, on the file.
            let pins =
                nullport::mcp::pins::Pins::load(home.pins(), nullport::audit::Audit::disabled())?;
            pins.accept(&scope, &tool)?;
        }
    }
    out!("accepted {tool} in {scope} as the server presents it now");
    Ok(())
}
