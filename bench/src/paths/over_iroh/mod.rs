//! The iroh-relay peer: the same security as nullport (end-to-end encrypted QUIC between
//! the two endpoints, relayed by a server that cannot read it), measured two ways:
//! - `iroh`: the library, a bench server process and the opener here, each new stream an
//!   `open_bi` on one iroh connection;
//! - `iroh-tunnel`: iroh as a tunnel (the user path, like dumbpipe): TCP in on one side,
//!   TCP out on the other, one iroh bi-stream per TCP connection.
//!
//! Both go through a local `iroh-relay` server in its own process (plain HTTP on loopback)
//! and their endpoints have no IP transport at all, so every byte crosses the relay; each
//! new stream also checks that its connection has relay paths only. Built only with the
//! cargo feature `iroh`.

#[cfg(feature = "iroh")]
mod net;
#[cfg(feature = "iroh")]
mod tunnel;

use anyhow::Result;

use super::Path;

/// What a build without the feature says when an iroh path or role is asked for.
const FEATURE_OFF: &str = "np-bench was built without the cargo feature `iroh` \
    (cargo build --release -p nullport-bench --features iroh)";

/// Why the iroh paths cannot run in this build, if they cannot.
pub fn unavailable() -> Option<String> {
    if cfg!(feature = "iroh") {
        None
    } else {
        Some(FEATURE_OFF.to_owned())
    }
}

/// Starts the path `iroh` (`tunnel` false) or `iroh-tunnel` (`tunnel` true).
pub async fn start(tunnel: bool) -> Result<Path> {
    #[cfg(feature = "iroh")]
    {
        if tunnel {
            tunnel::start().await
        } else {
            net::start().await
        }
    }
    #[cfg(not(feature = "iroh"))]
    {
        let _ = tunnel;
        anyhow::bail!("{FEATURE_OFF}")
    }
}

/// Runs one of the hidden `np-bench iroh ROLE ARGS...` roles: `relay`, `serve URL`,
/// `tunnel-out URL TCP_ADDR`, `tunnel-in URL ENDPOINT_ID`.
pub async fn role(role: &str, args: &[String]) -> Result<()> {
    #[cfg(feature = "iroh")]
    {
        let arg = |i: usize| {
            args.get(i)
                .map(String::as_str)
                .ok_or_else(|| anyhow::anyhow!("iroh {role}: missing argument {}", i + 1))
        };
        match role {
            "relay" => net::relay().await,
            "serve" => net::serve(arg(0)?).await,
            "tunnel-out" => tunnel::out(arg(0)?, arg(1)?).await,
            "tunnel-in" => tunnel::into(arg(0)?, arg(1)?).await,
            other => anyhow::bail!("unknown iroh role {other:?}"),
        }
    }
    #[cfg(not(feature = "iroh"))]
    {
        let _ = (role, args);
        anyhow::bail!("{FEATURE_OFF}")
    }
}
