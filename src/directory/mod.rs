//! Directories users and their passwords may live in besides the users
//! file (`crate::users`, the embedded default).

pub mod ldap;
pub mod oidc;
