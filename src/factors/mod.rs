//! Second factors: one module a factor, each able to enrol, challenge and
//! verify. None of them renders pages.

pub mod totp;
