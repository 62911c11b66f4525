//! Second factors: one module a factor, each able to enrol, challenge and
//! verify. None of them renders pages.

pub mod oob;
pub mod recovery;
pub mod totp;
pub mod webauthn;
