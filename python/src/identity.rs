//! `Identity`: a node's Ed25519 key, generated, loaded from a key file (with the same
//! passphrase sources as the CLI) or from a nullport home.

use std::path::PathBuf;
use std::sync::Arc;

use nullport::home::Home;
use nullport_keyring::{KdfParams, PassphraseSource, Protection, key_file};
use pyo3::prelude::*;
use zeroize::Zeroizing;

use crate::errors::{IdentityError, keyring_error};

/// The variable the CLI reads a key's passphrase from; so does this package.
const PASSPHRASE_ENV: &str = "NULLPORT_PASSPHRASE";

/// The systemd credential the CLI reads a key's passphrase from (`LoadCredential=`).
const PASSPHRASE_CREDENTIAL: &str = "nullport-passphrase";

/// A node identity (an Ed25519 key pair); its public half is the node's NodeId.
///
/// Make one with `Identity.generate()`, `Identity.load(path, ...)` or
/// `Identity.from_home(...)`. An identity loaded from a home remembers it, so a node started
/// with it resolves peer aliases from that home's trust store.
#[pyclass(module = "nullport._native", frozen)]
pub struct Identity {
    pub(crate) inner: Arc<nullport_protocol::Identity>,
    pub(crate) home: Option<Home>,
}

/// Reads a key file's passphrase the way the CLI does: `passphrase` if given, else the
/// `passphrase_file`, else `$NULLPORT_PASSPHRASE`, else the systemd credential, else a prompt
/// on the terminal (if there is one in the foreground).
fn load_key(
    path: PathBuf,
    passphrase: Option<String>,
    passphrase_file: Option<PathBuf>,
) -> PyResult<nullport_protocol::Identity> {
    if !path.exists() {
        return Err(IdentityError::new_err(format!(
            "no identity key at {} (run `nullport init`, or use Identity.generate())",
            path.display()
        )));
    }
    let encrypted = key_file::is_encrypted(&path).map_err(keyring_error)?;
    let pass: Option<Zeroizing<String>> = match (encrypted, passphrase) {
        (false, _) => None,
        (true, Some(p)) => Some(Zeroizing::new(p)),
        (true, None) => Some(
            PassphraseSource::choose(passphrase_file, PASSPHRASE_ENV, PASSPHRASE_CREDENTIAL)
                .read("identity key", |p: &str| rpassword::prompt_password(p))
                .map_err(keyring_error)?,
        ),
    };
    key_file::load(&path, pass.as_ref().map(|p| p.as_str())).map_err(keyring_error)
}

#[pymethods]
impl Identity {
    /// A new random identity (not saved anywhere; see `save`).
    #[staticmethod]
    fn generate() -> PyResult<Identity> {
        let inner = nullport_protocol::Identity::generate()
            .map_err(|e| IdentityError::new_err(e.to_string()))?;
        Ok(Identity {
            inner: Arc::new(inner),
            home: None,
        })
    }

    /// Loads the identity in the key file at `path`.
    ///
    /// An encrypted key's passphrase is `passphrase` if given, else the first line of
    /// `passphrase_file`, else `$NULLPORT_PASSPHRASE`, else the systemd credential
    /// `nullport-passphrase`, else asked on the terminal (as the CLI does). Raises
    /// `IdentityError` (missing file, wrong passphrase, bad format).
    #[staticmethod]
    #[pyo3(signature = (path, passphrase=None, *, passphrase_file=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        passphrase: Option<String>,
        passphrase_file: Option<PathBuf>,
    ) -> PyResult<Identity> {
        let inner = py.detach(|| load_key(path, passphrase, passphrase_file))?;
        Ok(Identity {
            inner: Arc::new(inner),
            home: None,
        })
    }

    /// Loads the identity of a nullport home (the directory `nullport init` made): `home`
    /// if given, else `$NULLPORT_HOME`, else `$XDG_CONFIG_HOME/nullport`, else
    /// `~/.config/nullport`, as the CLI resolves it. The passphrase as in `load`. A node
    /// started with this identity resolves aliases from the home's trust store.
    #[staticmethod]
    #[pyo3(signature = (home=None, passphrase=None, *, passphrase_file=None))]
    fn from_home(
        py: Python<'_>,
        home: Option<PathBuf>,
        passphrase: Option<String>,
        passphrase_file: Option<PathBuf>,
    ) -> PyResult<Identity> {
        let home = Home::resolve(home);
        let key = home.key();
        let inner = py.detach(|| load_key(key, passphrase, passphrase_file))?;
        Ok(Identity {
            inner: Arc::new(inner),
            home: Some(home),
        })
    }

    /// Writes the identity to a key file at `path` (mode 0600), encrypted under
    /// `passphrase`, or in clear if `passphrase` is None. Refuses to replace an existing file
    /// unless `overwrite`.
    #[pyo3(signature = (path, passphrase, *, overwrite=false))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        passphrase: Option<String>,
        overwrite: bool,
    ) -> PyResult<()> {
        let protection = match passphrase {
            Some(p) => Protection::Passphrase(Zeroizing::new(p), KdfParams::default()),
            None => Protection::InsecurePlaintext,
        };
        let inner = self.inner.clone();
        py.detach(|| key_file::store(&path, &inner, &protection, overwrite))
            .map_err(keyring_error)
    }

    /// The NodeId (the public key, in its text form `np...`).
    #[getter]
    fn node_id(&self) -> String {
        self.inner.node_id().to_string()
    }

    /// The home this identity was loaded from, if any.
    #[getter]
    fn home(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.dir().to_owned())
    }

    fn __repr__(&self) -> String {
        format!("Identity({})", self.inner.node_id())
    }
}
