//! `nullport-relay`: the rendezvous relay binary.

fn main() {
    eprintln!(
        "nullport-relay {}: the relay is not built yet (see docs/architecture.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
