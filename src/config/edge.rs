//! How an app's server reads a request, so the gateway reads it the same
//! way at the edge (see `crate::edge`).

use serde::Deserialize;

/// How the app's server compares paths, and so how rules match them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatching {
    /// Byte for byte, as most Unix servers do.
    #[default]
    Exact,
    /// Without regard to case (after Unicode upper-casing, as NTFS does).
    CaseInsensitive,
    /// As IIS on Windows: case-insensitive, and paths Windows would
    /// resolve to another name (a segment ending in a dot or a space, an
    /// alternate data stream after `:`, an 8.3 short name such as
    /// `ADMINI~1`) are refused.
    Windows,
}

impl PathMatching {
    pub fn folds_case(self) -> bool {
        !matches!(self, PathMatching::Exact)
    }
}

/// What to do with `X-HTTP-Method-Override` and its kin from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// Remove them, so the app sees the method the rules saw.
    #[default]
    Strip,
    /// For apps that honour them: forward them, and let the request pass
    /// only if the rules allow both its method and the one it names.
    Honour,
}

/// What to do with request header names that hold an underscore, which
/// CGI, WSGI and PHP servers read as a dash (`Remote_User` as `REMOTE_USER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderUnderscores {
    /// Answer 400.
    #[default]
    Refuse,
    /// Remove those headers and pass the request.
    Drop,
    /// Pass them, except those that read as a header the gateway sets.
    Allow,
}

/// The query parameters an app's rules read: a request that repeats one
/// is refused at the edge, since apps disagree on which value counts.
#[derive(Debug, Clone, Default)]
pub struct WatchedQuery {
    /// A `when` expression reads the query: any parameter may matter.
    pub every_name: bool,
    /// The parameters `query` conditions name.
    pub names: Vec<String>,
}

impl WatchedQuery {
    pub fn of(rules: &[super::Rule]) -> Self {
        let mut watched = WatchedQuery::default();
        for rule in rules {
            watched.every_name |= rule.conditions.when.as_ref().is_some_and(|when| when.reads_query());
            for (name, _) in &rule.conditions.query {
                if !watched.names.contains(name) {
                    watched.names.push(name.clone());
                }
            }
        }
        watched
    }
}
