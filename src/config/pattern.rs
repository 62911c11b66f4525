//! How a rule matches a request path.
//!
//! A path without a trailing slash also matches the patterns of the same
//! path with one: `path = "/admin/"` covers `/admin`, which most servers
//! answer as the same resource (Express and older Spring serve both, others
//! redirect one to the other).
//!
//! Apps whose server compares paths without regard to case are matched on
//! folded paths (see [`fold_case`]): the pattern is folded when the rule is
//! built, the request path at the edge, so both sides agree.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

#[derive(Debug, Clone)]
pub enum PathPattern {
    /// `path = "/admin/"`: the path starts with this.
    Prefix(String),
    /// `glob = "/files/**/*.pdf"`: `*` stays within a segment, `**` crosses them.
    Glob(GlobMatcher),
    /// `regex = "^/api/v[0-9]+/"`: unanchored unless the expression anchors itself.
    Regex(Regex),
}

/// Generous for any real rule, small enough that a typo cannot make a
/// pathological automaton.
pub(super) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A path as a server that ignores case sees it. Upper-casing first, as
/// NTFS and IIS compare, so that `ı` (dotless i) and `ſ` (long s) meet
/// `i` and `s`; then lower-casing, so ASCII paths keep their usual form.
pub fn fold_case(path: &str) -> String {
    if path.is_ascii() {
        return path.to_ascii_lowercase();
    }
    path.to_uppercase().to_lowercase()
}

impl PathPattern {
    /// `fold`: match paths case-insensitively (they arrive folded).
    pub fn prefix(prefix: String, fold: bool) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("path `{prefix}` must start with `/`"));
        }
        Ok(PathPattern::Prefix(if fold { fold_case(&prefix) } else { prefix }))
    }

    pub fn glob(glob: &str, fold: bool) -> Result<Self, String> {
        if !glob.starts_with('/') && !glob.starts_with('*') {
            return Err(format!("glob `{glob}` must start with `/`"));
        }
        // Folding the text keeps the glob's syntax (its special characters
        // have no case) and lets the index file it under its folded segment.
        let source = if fold { fold_case(glob) } else { glob.to_string() };
        GlobBuilder::new(&source)
            .literal_separator(true)
            .build()
            .map(|g| PathPattern::Glob(g.compile_matcher()))
            .map_err(|e| format!("invalid glob `{glob}`: {e}"))
    }

    pub fn regex(regex: &str, fold: bool) -> Result<Self, String> {
        regex::RegexBuilder::new(regex)
            .size_limit(REGEX_SIZE_LIMIT)
            .case_insensitive(fold)
            .build()
            .map(PathPattern::Regex)
            .map_err(|e| format!("invalid regex `{regex}`: {e}"))
    }

    /// Whether the pattern covers `path` (normalized, folded for apps that
    /// ignore case), or `path` with a trailing slash added.
    pub fn matches(&self, path: &str) -> bool {
        if self.matches_exactly(path) {
            return true;
        }
        !path.ends_with('/') && self.matches_with_slash(path)
    }

    fn matches_exactly(&self, path: &str) -> bool {
        match self {
            PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathPattern::Glob(glob) => glob.is_match(path),
            PathPattern::Regex(regex) => regex.is_match(path),
        }
    }

    fn matches_with_slash(&self, path: &str) -> bool {
        match self {
            // Without the allocation: `/admin` against `/admin/`.
            PathPattern::Prefix(prefix) => prefix.strip_suffix('/') == Some(path),
            _ => self.matches_exactly(&format!("{path}/")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_its_trailing_slash_is_covered() {
        let admin = PathPattern::prefix("/admin/".into(), false).unwrap();
        assert!(admin.matches("/admin"));
        assert!(admin.matches("/admin/"));
        assert!(admin.matches("/admin/x"));
        assert!(!admin.matches("/administrator"));
        assert!(!admin.matches("/admin.php"));
        let glob = PathPattern::glob("/files/**", false).unwrap();
        assert!(glob.matches("/files"));
        let regex = PathPattern::regex("^/admin/$", false).unwrap();
        assert!(regex.matches("/admin"));
    }

    #[test]
    fn folded_patterns_meet_folded_paths() {
        assert_eq!(fold_case("/ADMIN/"), "/admin/");
        assert_eq!(fold_case("/adm\u{131}n/"), "/admin/");
        assert_eq!(fold_case("/\u{17f}ecret"), "/secret");
        assert_eq!(fold_case("/\u{212a}ey"), "/key");
        let prefix = PathPattern::prefix("/Admin/".into(), true).unwrap();
        assert!(prefix.matches(&fold_case("/ADMIN/x")));
        let glob = PathPattern::glob("/Files/*.PDF", true).unwrap();
        assert!(glob.matches(&fold_case("/FILES/a.pdf")));
        let regex = PathPattern::regex("^/Api/", true).unwrap();
        assert!(regex.matches(&fold_case("/API/x")));
    }
}
