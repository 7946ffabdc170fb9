//! Where a key passphrase comes from: a file (daemons), an environment variable, or an
//! interactive prompt supplied by the binary.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::Error;

/// A passphrase source, in the order a binary should try them.
#[derive(Debug, Clone)]
pub enum PassphraseSource {
    /// The first line of this file (it must not be readable by others).
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// Ask interactively.
    Prompt,
}

impl PassphraseSource {
    /// Picks the source: `file` if given, else `env_var` if set, else a prompt.
    pub fn choose(file: Option<PathBuf>, env_var: &str) -> Self {
        match file {
            Some(path) => PassphraseSource::File(path),
            None if std::env::var_os(env_var).is_some() => {
                PassphraseSource::Env(env_var.to_owned())
            }
            None => PassphraseSource::Prompt,
        }
    }

    /// Reads the passphrase; `prompt` is called only for [`PassphraseSource::Prompt`].
    pub fn read(
        &self,
        prompt: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Zeroizing<String>, Error> {
        match self {
            PassphraseSource::File(path) => {
                let bytes = Zeroizing::new(crate::fs::read_private(path)?);
                let text = std::str::from_utf8(&bytes).map_err(|_| Error::Corrupt {
                    path: path.clone(),
                    reason: "passphrase file is not UTF-8",
                })?;
                Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()))
            }
            PassphraseSource::Env(var) => {
                std::env::var(var)
                    .map(Zeroizing::new)
                    .map_err(|_| Error::PassphraseUnavailable {
                        source_name: format!("${var}"),
                    })
            }
            PassphraseSource::Prompt => {
                prompt()
                    .map(Zeroizing::new)
                    .map_err(|_| Error::PassphraseUnavailable {
                        source_name: "the terminal (no TTY? use a passphrase file or variable)"
                            .into(),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_source_reads_first_line_and_checks_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let src = PassphraseSource::choose(Some(path.clone()), "NULLPORT_TEST_UNSET_VAR");
        assert_eq!(
            src.read(|| Ok("prompted".into()))
                .ok()
                .as_deref()
                .map(String::as_str),
            Some("s3cret")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            src.read(|| Ok(String::new())),
            Err(Error::LoosePermissions { .. })
        ));
    }

    #[test]
    fn prompt_is_used_last() {
        let src = PassphraseSource::choose(None, "NULLPORT_TEST_UNSET_VAR");
        assert!(matches!(src, PassphraseSource::Prompt));
        assert_eq!(
            src.read(|| Ok("typed".into()))
                .ok()
                .as_deref()
                .map(String::as_str),
            Some("typed")
        );
        assert!(matches!(
            src.read(|| Err(std::io::Error::other("no tty"))),
            Err(Error::PassphraseUnavailable { .. })
        ));
    }
}
