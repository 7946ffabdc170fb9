//! Authorization at the callee: the policy file, capability tokens (delegable, narrowing
//! only), and the pattern type both match rule lists with.

pub mod args;
pub mod calls;
pub mod pattern;
pub mod policy;
pub mod token;
pub mod ttl;
pub mod uri;
