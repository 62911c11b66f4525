//! Which rules can possibly match a path, found without trying them all.
//!
//! Prefix and glob rules that name a literal first path segment (`/admin/`,
//! `/files/**`) are filed under it: every path they match (with or without
//! a trailing slash) starts with it. The other prefix and glob rules (`/`,
//! `/admin` without a slash, `**/*.pdf`) are candidates for every path.
//! Regex rules are not placed by reading their source, which cannot be
//! done safely (`^/admin/?` also matches `/admin.php`): they are all
//! matched in one pass of a [`RegexSet`], and the ones that match are
//! candidates. Rules are still checked in full and in order; the index
//! only skips rules that cannot match, so a decision through it equals a
//! plain ordered scan (property-tested in `policy::tests`).

use std::collections::HashMap;

use regex::{RegexSet, RegexSetBuilder};

use super::pattern::REGEX_SIZE_LIMIT;
use super::{PathPattern, Rule};

#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    by_first_segment: HashMap<String, Vec<usize>>,
    anywhere: Vec<usize>,
    /// Every regex rule's expression, in rule order, and its rule's index.
    regexes: Option<RegexSet>,
    regex_rules: Vec<usize>,
}

impl RuleIndex {
    /// `fold`: the app matches paths case-insensitively.
    pub fn build(rules: &[Rule], fold: bool) -> Result<Self, String> {
        let mut index = RuleIndex::default();
        let mut expressions = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.pattern {
                Some(PathPattern::Regex(regex)) => {
                    expressions.push(regex.as_str());
                    index.regex_rules.push(i);
                }
                Some(pattern) => match required_first_segment(pattern) {
                    Some(segment) => index.by_first_segment.entry(segment).or_default().push(i),
                    None => index.anywhere.push(i),
                },
                None => index.anywhere.push(i),
            }
        }
        if !expressions.is_empty() {
            let set = RegexSetBuilder::new(&expressions)
                .case_insensitive(fold)
                .size_limit(REGEX_SIZE_LIMIT.saturating_mul(expressions.len()))
                .build()
                .map_err(|e| format!("the rules' regexes cannot be combined: {e}"))?;
            index.regexes = Some(set);
        }
        Ok(index)
    }

    /// The indices of the rules that may match `path`, in rule order.
    pub fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let filed: &[usize] = self.by_first_segment.get(first_segment(path)).map_or(&[], Vec::as_slice);
        MergeSorted { lists: [filed, &self.anywhere], extra: self.matching_regex_rules(path), next_extra: 0 }
    }

    /// The regex rules whose expression matches `path`, or `path` with a
    /// trailing slash (see [`PathPattern::matches`]).
    fn matching_regex_rules(&self, path: &str) -> Vec<usize> {
        let Some(set) = &self.regexes else {
            return Vec::new();
        };
        let mut matched: Vec<usize> = set.matches(path).iter().collect();
        if !path.ends_with('/') {
            matched.extend(set.matches(&format!("{path}/")).iter());
            matched.sort_unstable();
            matched.dedup();
        }
        matched.into_iter().map(|i| self.regex_rules[i]).collect()
    }
}

/// The first segment of a normalized path: `admin` in `/admin/x`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// The first segment every path matching a prefix or glob must have, if
/// the pattern pins one down (a literal segment followed by a slash).
fn required_first_segment(pattern: &PathPattern) -> Option<String> {
    let literal = |s: &str, is_special: fn(char) -> bool| {
        let rest = s.strip_prefix('/')?;
        let (segment, _) = rest.split_once('/')?;
        (!segment.is_empty() && !segment.chars().any(is_special)).then(|| segment.to_string())
    };
    match pattern {
        PathPattern::Prefix(prefix) => literal(prefix, |_| false),
        PathPattern::Glob(glob) => literal(glob.glob().glob(), |c| "*?[]{}\\!".contains(c)),
        PathPattern::Regex(_) => None,
    }
}

/// Merges ascending lists of indices (two borrowed, one owned) into one.
struct MergeSorted<'a> {
    lists: [&'a [usize]; 2],
    extra: Vec<usize>,
    next_extra: usize,
}

impl Iterator for MergeSorted<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let heads = [self.lists[0].first(), self.lists[1].first(), self.extra.get(self.next_extra)];
        let (which, smallest) = heads.iter().enumerate().filter_map(|(i, head)| Some((i, **head.as_ref()?))).min_by_key(|(_, v)| *v)?;
        match which {
            2 => self.next_extra += 1,
            list => self.lists[list] = &self.lists[list][1..],
        }
        Some(smallest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(kind: &str, source: &str) -> PathPattern {
        match kind {
            "path" => PathPattern::prefix(source.into(), false).unwrap(),
            _ => PathPattern::glob(source, false).unwrap(),
        }
    }

    #[test]
    fn only_patterns_that_pin_the_first_segment_are_filed() {
        let cases = [
            ("path", "/admin/", Some("admin")),
            ("path", "/admin/users", Some("admin")),
            ("path", "/admin", None),
            ("path", "/", None),
            ("glob", "/files/**/*.pdf", Some("files")),
            ("glob", "/f*/x", None),
            ("glob", "/**/x", None),
        ];
        for (kind, source, expected) in cases {
            assert_eq!(required_first_segment(&pattern(kind, source)).as_deref(), expected, "{kind} {source}");
        }
    }

    #[test]
    fn candidates_keep_rule_order() {
        let merged: Vec<usize> = MergeSorted { lists: [&[1, 4, 9], &[0, 5, 6, 10]], extra: vec![2, 7, 11], next_extra: 0 }.collect();
        assert_eq!(merged, [0, 1, 2, 4, 5, 6, 7, 9, 10, 11]);
        assert_eq!(first_segment("/admin/x"), "admin");
        assert_eq!(first_segment("/admin"), "admin");
        assert_eq!(first_segment("/"), "");
    }

    /// The index must never change a decision: for many paths, deciding
    /// with it equals trying every rule (what `explain` does).
    #[test]
    fn the_index_decides_like_a_full_scan() {
        use crate::config::{Confidence, Config, PolicyConfig};
        use crate::geo::GeoFacts;
        use crate::policy::{decide, explain, Request, Subject};

        let rules = r#"
[[apps.rules]]
regex = "^/admin/?"
policy = "always"
[[apps.rules]]
path = "/admin"
policy = "deny"
[[apps.rules]]
glob = "/files/**/*.pdf"
policy = "always"
[[apps.rules]]
regex = "^/api/v[0-9]+/"
methods = ["POST"]
policy = "deny"
[[apps.rules]]
regex = '\.php$'
policy = "deny"
[[apps.rules]]
path = "/admin/"
policy = "always"
[[apps.rules]]
glob = "**/secret"
policy = "deny"
[[apps.rules]]
path = "/public/"
policy = "bypass"
[[apps.rules]]
regex = "^/api/"
policy = "never"
"#;
        let text = format!(
            "users_file = \"u.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
             [[apps]]\nid = \"a\"\nhosts = [\"a.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\ndefault_policy = \"never\"\n{rules}"
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let app = &config.apps[0];
        let settings = PolicyConfig::default();
        let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
        let subject = Subject {
            username: "u",
            groups: &[],
            second_factors: crate::methods::MethodTimes::default(),
            trusted_browser: false,
            confidence: Confidence::High,
        };
        let paths = [
            "/",
            "/admin",
            "/admin/",
            "/administrator",
            "/admin/x.php",
            "/files/a/b.pdf",
            "/files/b.pdf",
            "/files/x",
            "/api/v1/x",
            "/api/v1",
            "/api/x",
            "/public/secret",
            "/public/x",
            "/x/secret",
            "/index.php",
            "/apix/v1/",
            "/admin.php",
            "/adminpanel/users",
            "/admin-old/",
        ];
        for path in paths {
            for method in [http::Method::GET, http::Method::POST] {
                let request = Request {
                    method: &method,
                    method_override: None,
                    path,
                    query: None,
                    headers: &headers,
                    ip: [192, 0, 2, 1].into(),
                    geo: &geo,
                    now: 0,
                };
                for subject in [None, Some(&subject)] {
                    let fast = decide(app, &settings, &request, subject);
                    let full = explain(app, &settings, &request, subject).outcome;
                    assert_eq!(fast, full, "{method} {path}");
                }
            }
        }
    }
}
