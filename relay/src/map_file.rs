//! The signed relay map as a file: what `nullport-relay map sign` writes, `map show` reads and
//! `run --map FILE` serves (and reloads when it changes).
//!
//! The file is JSON, readable as is, and carries the exact signed bytes:
//!
//! ```json
//! {
//!   "nullport_relay_map": 1,
//!   "map": { "admin": "np...", "version": 3, "issued": 1764290000,
//!            "relays": [ { "node_id": "np...", "addrs": ["relay1.example.net:7443"], "region": "eu" } ] },
//!   "body": "<hex of postcard(map): the bytes the admin key signed>",
//!   "sig": "<hex of the Ed25519 signature>"
//! }
//! ```
//!
//! `body` and `sig` are what travels to nodes; `map` is there for people and must say exactly
//! what `body` says (a hand-edited `map` is refused, not silently ignored). Loading refuses
//! unknown fields, another format number, bad hex, a body that is not one canonical map, and
//! a signature that does not verify under the admin key the map names.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nullport_keyring::relay_map::{RelayMap, RelayMapError};
use nullport_protocol::Signature;
use nullport_protocol::relay_link::SignedRelayMap;
use serde::{Deserialize, Serialize};

use crate::server::RelayHandle;

/// The format number in the file (`"nullport_relay_map": 1`).
pub const MAP_FILE_FORMAT: u32 = 1;
/// Largest map file read (a 64 KiB body is 128 KiB of hex, plus its readable copy).
pub const MAX_MAP_FILE: u64 = 1024 * 1024;

/// A relay map whose signature verified under the admin key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMap {
    /// What the map says.
    pub map: RelayMap,
    /// The signed bytes, as they travel to nodes.
    pub signed: SignedRelayMap,
}

/// What is wrong with a map file, without the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapProblem {
    /// The file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Larger than [`MAX_MAP_FILE`].
    #[error("larger than 1 MiB: not a relay map")]
    TooLarge,
    /// Not a map file: bad JSON, unknown fields, another format, bad hex, or a readable
    /// `map` that differs from the signed body.
    #[error("not a nullport relay map file: {0}")]
    Format(String),
    /// A map file whose signed map is refused: malformed body, not canonical, out of
    /// bounds, or a signature that does not verify.
    #[error(transparent)]
    Refused(#[from] RelayMapError),
    /// A valid map the running relay would not take (older than the one in force, another
    /// admin, or not listing this relay).
    #[error("{0}")]
    NotTaken(String),
}

/// A map file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("relay map {}: {problem}", path.display())]
pub struct MapFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: MapProblem,
}

/// The file's JSON shape (`M`: the readable map; read as a JSON value, so that it can be
/// compared field for field, unknown fields included, with what the body says).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile<M> {
    nullport_relay_map: u32,
    map: M,
    body: String,
    sig: String,
}

/// The text of a map file for `signed` (pretty JSON, ending in a newline). `map` must be
/// what `signed` says ([`RelayMap::sign`] and [`RelayMap::verify_self_signed`] give both).
pub fn render(verified: &VerifiedMap) -> String {
    let file = MapFile {
        nullport_relay_map: MAP_FILE_FORMAT,
        map: verified.map.clone(),
        body: hex(&verified.signed.body),
        sig: hex(&verified.signed.sig.0),
    };
    // Serialising plain strings, numbers and NodeIds into a String cannot fail.
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses and verifies the text of a map file.
pub fn parse(bytes: &[u8]) -> Result<VerifiedMap, MapProblem> {
    if bytes.len() as u64 > MAX_MAP_FILE {
        return Err(MapProblem::TooLarge);
    }
    let file: MapFile<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| MapProblem::Format(e.to_string()))?;
    if file.nullport_relay_map != MAP_FILE_FORMAT {
        return Err(MapProblem::Format(format!(
            "format {} (this relay reads format {MAP_FILE_FORMAT})",
            file.nullport_relay_map
        )));
    }
    let body = unhex(&file.body).ok_or_else(|| MapProblem::Format("\"body\" is not hex".into()))?;
    let sig: [u8; 64] = unhex(&file.sig)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| MapProblem::Format("\"sig\" is not 64 bytes of hex".into()))?;
    let signed = SignedRelayMap {
        body,
        sig: Signature(sig),
    };
    let map = RelayMap::verify_self_signed(&signed)?;
    if serde_json::to_value(&map).ok().as_ref() != Some(&file.map) {
        return Err(MapProblem::Format(
            "the readable \"map\" differs from the signed \"body\" (edited by hand? sign a new \
             version with `nullport-relay map sign`)"
                .into(),
        ));
    }
    Ok(VerifiedMap { map, signed })
}

/// Reads and verifies a map file.
pub fn load(path: &Path) -> Result<VerifiedMap, MapFileError> {
    let at = |problem: MapProblem| MapFileError {
        path: path.to_owned(),
        problem,
    };
    let bytes = read_bounded(path).map_err(at)?;
    parse(&bytes).map_err(at)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, MapProblem> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_MAP_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MAP_FILE {
        return Err(MapProblem::TooLarge);
    }
    Ok(bytes)
}

/// Writes a map file atomically (temporary file in the same directory, fsync, rename),
/// readable by all (a map is public: relays and their operators read it).
pub fn save(path: &Path, verified: &VerifiedMap) -> Result<(), MapFileError> {
    nullport_keyring::fs::write_atomic(path, render(verified).as_bytes(), 0o644, true).map_err(
        |e| MapFileError {
            path: path.to_owned(),
            problem: MapProblem::Io(match e {
                nullport_keyring::Error::Io { error, .. } => error,
                other => std::io::Error::other(other.to_string()),
            }),
        },
    )
}

/// Follows a map file for a running relay: [`MapWatcher::check`] loads it when it changed
/// (or when forced, on SIGHUP) and hands it to the relay. A file that fails to load, or a
/// map the relay will not take, is reported and the map in force stays.
#[derive(Debug)]
pub struct MapWatcher {
    path: PathBuf,
    seen: Option<Stamp>,
    version: u64,
}

/// What tells a changed file: modification time, size and inode (a rename-into-place
/// changes the inode even within one timestamp tick).
type Stamp = (Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len(), meta.ino()))
}

impl MapWatcher {
    /// Loads the map at `path` into `relay` (at start: an error means the relay must not
    /// run with it).
    pub fn start(path: &Path, relay: &RelayHandle) -> Result<(MapWatcher, RelayMap), MapFileError> {
        let seen = stamp(path);
        let verified = load(path)?;
        relay
            .set_relay_map(verified.signed)
            .map_err(|e| MapFileError {
                path: path.to_owned(),
                problem: MapProblem::NotTaken(e.to_string()),
            })?;
        Ok((
            MapWatcher {
                path: path.to_owned(),
                seen,
                version: verified.map.version,
            },
            verified.map,
        ))
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Reloads the file if it changed since the last look (or `forced`): `Ok(Some(map))`
    /// when a newer map is now in force, `Ok(None)` when nothing changed.
    pub fn check(
        &mut self,
        relay: &RelayHandle,
        forced: bool,
    ) -> Result<Option<RelayMap>, MapFileError> {
        let now = stamp(&self.path);
        if !forced && now == self.seen {
            return Ok(None);
        }
        self.seen = now;
        let verified = load(&self.path)?;
        let taken = relay
            .set_relay_map(verified.signed)
            .map_err(|e| MapFileError {
                path: self.path.clone(),
                problem: MapProblem::NotTaken(format!(
                    "{e}; version {} stays in force",
                    self.version
                )),
            })?;
        if !taken {
            return Ok(None);
        }
        self.version = verified.map.version;
        Ok(Some(verified.map))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests;
