//! How a rule matches a request path.

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
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl PathPattern {
    pub fn prefix(prefix: String) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("path `{prefix}` must start with `/`"));
        }
        Ok(PathPattern::Prefix(prefix))
    }

    pub fn glob(glob: &str) -> Result<Self, String> {
        if !glob.starts_with('/') && !glob.starts_with('*') {
            return Err(format!("glob `{glob}` must start with `/`"));
        }
        GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map(|g| PathPattern::Glob(g.compile_matcher()))
            .map_err(|e| format!("invalid glob `{glob}`: {e}"))
    }

    pub fn regex(regex: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(regex)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(PathPattern::Regex)
            .map_err(|e| format!("invalid regex `{regex}`: {e}"))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathPattern::Glob(glob) => glob.is_match(path),
            PathPattern::Regex(regex) => regex.is_match(path),
        }
    }
}
