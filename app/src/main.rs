//! `nullport`: the node daemon and CLI, over the `nullport` library.
// The doc comments of `cli` are clap help text, where `<peer>/<service>` is the usual
// notation, not HTML.
#![allow(rustdoc::invalid_html_tags)]
#![forbid(unsafe_code)]

mod cli;
mod quickstart;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Inside a sandbox (see `nullport::sandbox`): restrict this process and execute the
    // server, before any thread or runtime exists.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(nullport::sandbox::INSIDE_ARG.as_ref()) {
        let plan = args
            .next()
            .and_then(|p| p.into_string().ok())
            .unwrap_or_default();
        return nullport::sandbox::inside::main(&plan);
    }
    quiet_on_broken_pipe();
    let cli = cli::Cli::parse();
    // The daemon logs what it does; one-shot commands only warn.
    let default_filter = if cli.is_daemon() {
        "warn,nullport=info,nullport_node=info"
    } else {
        "warn"
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr);
    if cli.json_logs() {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nullport: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Do not wait for a blocking stdin read (`pipe`) that no one needs any more.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nullport: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `nullport status | head -1`: when the reader of stdout goes away, stop quietly with the
/// status a shell gives a process killed by SIGPIPE (141), instead of printing a panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
