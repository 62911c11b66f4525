//! Inputs on which a fuzz target (fuzz/, run by scripts/fuzz) once failed,
//! fed through the same checks: each file in
//! `tests/fuzz-regressions/TARGET/` goes to the check of that target.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs every saved input of `target` through `check`, and names those
/// that fail.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut failed = Vec::new();
    for entry in entries {
        let path = entry.expect("a readable directory").path();
        let input = std::fs::read(&path).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "failing inputs: {failed:?}");
}

#[test]
fn path() {
    replay("path", checks::path);
}

#[test]
fn cookie() {
    replay("cookie", checks::cookie);
}

#[test]
fn forwarded_for() {
    replay("forwarded_for", checks::forwarded_for);
}

#[test]
fn forms() {
    replay("forms", checks::forms);
}

#[test]
fn webauthn_json() {
    replay("webauthn_json", checks::webauthn_json);
}

#[test]
fn config() {
    replay("config", checks::config);
}

#[test]
fn cel() {
    replay("cel", checks::cel);
}

#[test]
fn edge() {
    replay("edge", checks::edge);
}
