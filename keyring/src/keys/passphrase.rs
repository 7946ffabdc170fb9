//! Where a key passphrase comes from: a file (daemons), an environment variable, a systemd
//! credential (`LoadCredential=`), or an interactive prompt supplied by the binary, which is
//! used only when there is a terminal in the foreground to ask on: a daemon started in the
//! background or by a supervisor gets a clear error instead of a prompt that blocks forever.

use std::io::IsTerminal;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::Error;

/// The shortest passphrase accepted for a new key.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// The environment variable systemd sets to the directory of a service's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// A passphrase source, in the order a binary should try them.
#[derive(Debug, Clone)]
pub enum PassphraseSource {
    /// The first line of this file (it must not be readable by others).
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// A systemd credential: the first line of this file in `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// Ask interactively (if there is a terminal in the foreground).
    Prompt {
        /// The variable that would have been read (named in errors).
        env_var: String,
        /// The credential that would have been read (named in errors).
        credential: String,
    },
}

/// Why no passphrase could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseProblem {
    /// The variable is set but not valid UTF-8.
    #[error("${0} is not valid UTF-8")]
    EnvNotUnicode(String),
    /// Nobody to ask: stdin is not a terminal, or the process runs in the background.
    #[error(
        "the key is encrypted and there is no terminal in the foreground to ask for its passphrase ({why}); give it with --passphrase-file FILE, ${env_var}, or a systemd credential named {credential}"
    )]
    NoTerminal {
        /// "stdin is not a terminal" or "running in the background".
        why: &'static str,
        /// The variable to set.
        env_var: String,
        /// The credential to provide.
        credential: String,
    },
    /// Reading from the terminal failed.
    #[error("reading the passphrase from the terminal failed: {0}")]
    Terminal(std::io::ErrorKind),
    /// A systemd credential offered for a new key.
    #[error(
        "a new key's passphrase is not taken from a systemd credential ({}): give it with --passphrase-file FILE, or in a terminal",
        .0.display()
    )]
    CredentialForNewKey(PathBuf),
    /// The credential is not what systemd would have made.
    #[error(
        "{}: not used as a credential: it must belong to this user or root, be writable by no one else, and hold at most 4 KiB",
        .0.display()
    )]
    UnsafeCredential(PathBuf),
    /// The two entries of a new passphrase differ.
    #[error("the two passphrase entries differ")]
    Mismatch,
}

impl PassphraseSource {
    /// Picks the source: `file` if given, else `env_var` if set, else the systemd
    /// credential `credential` if the service has one, else a prompt.
    pub fn choose(file: Option<PathBuf>, env_var: &str, credential: &str) -> Self {
        if let Some(path) = file {
            return PassphraseSource::File(path);
        }
        if std::env::var_os(env_var).is_some() {
            return PassphraseSource::Env(env_var.to_owned());
        }
        let from_systemd = std::env::var_os(CREDENTIALS_DIRECTORY)
            .map(|dir| PathBuf::from(dir).join(credential))
            .filter(|path| path.is_file());
        match from_systemd {
            Some(path) => PassphraseSource::Credential(path),
            None => PassphraseSource::Prompt {
                env_var: env_var.to_owned(),
                credential: credential.to_owned(),
            },
        }
    }

    /// Reads the passphrase of an existing key; `prompt(text)` asks on the terminal (only
    /// for [`PassphraseSource::Prompt`], and only with a terminal in the foreground).
    pub fn read(
        &self,
        what: &str,
        prompt: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Zeroizing<String>, Error> {
        match self {
            PassphraseSource::File(path) | PassphraseSource::Credential(path) => {
                // A credential sits in the directory systemd makes private to this service
                // (its owner and mode are systemd's to choose); any other file must be ours
                // and unreadable by others.
                let bytes = Zeroizing::new(match self {
                    PassphraseSource::Credential(_) => read_credential(path)?,
                    _ => crate::fs::read_private(path)?,
                });
                let text = std::str::from_utf8(&bytes).map_err(|_| Error::Corrupt {
                    path: path.clone(),
                    reason: "passphrase file is not UTF-8",
                })?;
                Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()))
            }
            PassphraseSource::Env(var) => std::env::var(var).map(Zeroizing::new).map_err(|_| {
                Error::PassphraseUnavailable(PassphraseProblem::EnvNotUnicode(var.clone()))
            }),
            PassphraseSource::Prompt {
                env_var,
                credential,
            } => {
                if let Some(why) = no_terminal() {
                    return Err(Error::PassphraseUnavailable(
                        PassphraseProblem::NoTerminal {
                            why,
                            env_var: env_var.clone(),
                            credential: credential.clone(),
                        },
                    ));
                }
                prompt(&format!("{what} passphrase: "))
                    .map(Zeroizing::new)
                    .map_err(|e| {
                        Error::PassphraseUnavailable(PassphraseProblem::Terminal(e.kind()))
                    })
            }
        }
    }

    /// Reads the passphrase for a new key: asked twice on a terminal, and at least
    /// [`MIN_PASSPHRASE_CHARS`] characters from any source.
    pub fn read_new(
        &self,
        what: &str,
        prompt: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Zeroizing<String>, Error> {
        if let PassphraseSource::Credential(path) = self {
            // A credential is for starting a service with a key that exists, not for
            // choosing a new key's passphrase.
            return Err(Error::PassphraseUnavailable(
                PassphraseProblem::CredentialForNewKey(path.clone()),
            ));
        }
        let pass = self.read(what, &prompt)?;
        if let PassphraseSource::Prompt { .. } = self {
            let again = prompt("again: ")
                .map(Zeroizing::new)
                .map_err(|e| Error::PassphraseUnavailable(PassphraseProblem::Terminal(e.kind())))?;
            if again != pass {
                return Err(Error::PassphraseUnavailable(PassphraseProblem::Mismatch));
            }
        }
        check_new(&pass)?;
        Ok(pass)
    }
}

/// Checks a new passphrase: at least [`MIN_PASSPHRASE_CHARS`] characters that are not
/// whitespace.
pub fn check_new(pass: &str) -> Result<(), Error> {
    if pass.chars().filter(|c| !c.is_whitespace()).count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::PassphraseTooShort {
            min: MIN_PASSPHRASE_CHARS,
        });
    }
    Ok(())
}

/// Reads a systemd credential: a regular file (not a link), owned by this user or root,
/// writable by no one else, at most 4 KiB.
fn read_credential(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let unsafe_credential =
        || Error::PassphraseUnavailable(PassphraseProblem::UnsafeCredential(path.to_owned()));
    let io = |error| Error::Io {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let owner_ok = meta.uid() == crate::fs::euid() || meta.uid() == 0;
    if !meta.is_file() || !owner_ok || meta.mode() & 0o022 != 0 || meta.len() > 4096 {
        return Err(unsafe_credential());
    }
    let mut bytes = Vec::new();
    file.take(4097).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > 4096 {
        return Err(unsafe_credential());
    }
    Ok(bytes)
}

/// Why there is nobody to ask, if there is not.
fn no_terminal() -> Option<&'static str> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Some("stdin is not a terminal");
    }
    match rustix::termios::tcgetpgrp(&stdin) {
        Ok(foreground) if foreground != rustix::process::getpgrp() => {
            Some("running in the background")
        }
        _ => None,
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
        let src = PassphraseSource::choose(Some(path.clone()), "NULLPORT_TEST_UNSET_VAR", "x");
        assert_eq!(
            src.read("key", |_| Ok("prompted".into()))
                .ok()
                .as_deref()
                .map(String::as_str),
            Some("s3cret")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            src.read("key", |_| Ok(String::new())),
            Err(Error::LoosePermissions { .. })
        ));
    }

    #[test]
    fn prompt_is_used_last_and_never_without_a_terminal() {
        let src = PassphraseSource::choose(None, "NULLPORT_TEST_UNSET_VAR", "nullport-test-cred");
        assert!(matches!(src, PassphraseSource::Prompt { .. }));
        // Tests run without a terminal on stdin: a clear error, and the prompt is not called.
        if std::io::stdin().is_terminal() {
            return;
        }
        let r = src.read("identity key", |_| panic!("prompted without a terminal"));
        match r {
            Err(Error::PassphraseUnavailable(PassphraseProblem::NoTerminal { why, .. })) => {
                assert_eq!(why, "stdin is not a terminal")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_passphrases_have_a_minimum_length() {
        assert!(matches!(
            check_new("1234567"),
            Err(Error::PassphraseTooShort { min: 8 })
        ));
        assert!(check_new("12345678").is_ok());
        // Characters, not bytes.
        assert!(check_new("ééééééé").is_err());
    }

    #[test]
    fn credentials_must_look_like_systemd_made_them_and_never_make_a_new_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "credential-pass\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o400)).unwrap();
        let source = PassphraseSource::Credential(good.clone());
        assert_eq!(
            source
                .read("key", |_| panic!("no prompt"))
                .unwrap()
                .as_str(),
            "credential-pass"
        );
        // Not for a new key.
        assert!(matches!(
            source.read_new("key", |_| panic!("no prompt")),
            Err(Error::PassphraseUnavailable(
                PassphraseProblem::CredentialForNewKey(_)
            ))
        ));
        // Writable by others, a symlink, or too big: refused.
        let loose = dir.path().join("loose");
        std::fs::write(&loose, "x\n").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        for path in [loose, big] {
            assert!(
                matches!(
                    PassphraseSource::Credential(path.clone()).read("key", |_| panic!()),
                    Err(Error::PassphraseUnavailable(
                        PassphraseProblem::UnsafeCredential(_)
                    ))
                ),
                "{}",
                path.display()
            );
        }
        assert!(
            PassphraseSource::Credential(link)
                .read("key", |_| panic!())
                .is_err()
        );
    }

    #[test]
    fn whitespace_does_not_count_toward_the_minimum() {
        assert!(check_new("        ").is_err());
        assert!(check_new("a b c d e f g").is_err());
        assert!(check_new("abcd efgh").is_ok());
    }
}
