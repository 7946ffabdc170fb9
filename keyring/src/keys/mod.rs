//! Keys at rest: identity key files, the passphrases that protect them, and the private-file
//! primitives (owner-only modes, atomic writes, locks) every secret file goes through.

pub mod fs;
pub mod key_file;
pub mod passphrase;
