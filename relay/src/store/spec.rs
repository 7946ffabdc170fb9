//! `--store`: which backend keeps the relay's state.

use std::str::FromStr;

use crate::error::StoreError;

/// Where the relay keeps the state it must not lose or must share with the other relays of a
/// fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSpec {
    /// The state directory's files (`--state-dir`; none: memory only), for this relay alone.
    #[default]
    Files,
    /// An etcd cluster shared by the relays of a fleet (`etcd://host:port,host:port,...`).
    /// Needs the cargo feature `etcd`; without it, the relay refuses to start.
    Etcd {
        /// The client URLs of the cluster's members (`http://host:port`).
        endpoints: Vec<String>,
    },
}

impl StoreSpec {
    /// The scheme of an etcd store.
    pub const ETCD_SCHEME: &'static str = "etcd://";
    /// Members named at most (a fleet's cluster has 3 or 5).
    pub const MAX_ENDPOINTS: usize = 16;
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    /// Parses `etcd://host:port[,host:port...]` (or `files`, the default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| StoreError::Spec {
            spec: s.to_owned(),
            why: why.to_owned(),
        };
        if s == "files" {
            return Ok(StoreSpec::Files);
        }
        let Some(rest) = s.strip_prefix(Self::ETCD_SCHEME) else {
            return Err(bad("expected etcd://host:port[,host:port...] or files"));
        };
        let mut endpoints = Vec::new();
        for member in rest.split(',') {
            let member = member.trim();
            let Some((host, port)) = member.rsplit_once(':') else {
                return Err(bad("every member needs host:port"));
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
            if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(&format!("{member:?} is not host:port")));
            }
            endpoints.push(format!("http://{host}:{port}"));
        }
        if endpoints.len() > Self::MAX_ENDPOINTS {
            return Err(bad("too many members"));
        }
        Ok(StoreSpec::Etcd { endpoints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "etcd://127.0.0.1:2379,etcd2:2379".parse::<StoreSpec>().ok(),
            Some(StoreSpec::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into(), "http://etcd2:2379".into()]
            })
        );
        assert_eq!("files".parse::<StoreSpec>().ok(), Some(StoreSpec::Files));
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://a:1,",
            "http://a:1",
            "etcd://a b:1",
        ] {
            assert!(bad.parse::<StoreSpec>().is_err(), "{bad}");
        }
    }
}
