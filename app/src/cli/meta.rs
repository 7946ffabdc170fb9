//! `version`, `completions`, `man`: about the binary itself, generated from the clap
//! definitions so they cannot drift from the commands.

use super::*;
use clap::CommandFactory;

pub(crate) fn version(json: bool) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let link = nullport_protocol::relay_link::LINK_VERSION;
    if json {
        println!(
            "{}",
            serde_json::json!({ "version": version, "relay_link_version": link })
        );
    } else {
        println!("nullport {version} (relay link version {link})");
    }
    Ok(())
}

pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    // Generated into memory (clap_complete panics on a failed write), then written; a
    // reader that went away (`| head`) ends the command as SIGPIPE would.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nullport", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        other => Ok(other?),
    }
}

pub(crate) fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    println!(
        "wrote nullport.1 and a page per command into {}",
        dir.display()
    );
    Ok(())
}
