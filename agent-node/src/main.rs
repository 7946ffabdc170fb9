//! `nullport`: the node daemon and CLI.

fn main() {
    eprintln!(
        "nullport {}: the node is not built yet (see docs/architecture.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
