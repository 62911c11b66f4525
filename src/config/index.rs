//! Which rules can possibly match a path, found without trying them all.
//!
//! Most rules name a first path segment (`/admin/`, `/files/**`, `^/api/`):
//! every path they match starts with it. Those are filed under the segment;
//! the rest (`/`, `/admin` without a slash, `**/*.pdf`, other regexes) are
//! candidates for every path. Rules are still checked in full and in order;
//! the index only skips the ones that cannot match.

use std::collections::HashMap;

use super::{PathPattern, Rule};

#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    by_first_segment: HashMap<String, Vec<usize>>,
    anywhere: Vec<usize>,
}

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> Self {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            match rule.pattern.as_ref().and_then(required_first_segment) {
                Some(segment) => index.by_first_segment.entry(segment).or_default().push(i),
                None => index.anywhere.push(i),
            }
        }
        index
    }

    /// The indices of the rules that may match `path`, in rule order.
    pub fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let filed: &[usize] = self.by_first_segment.get(first_segment(path)).map_or(&[], Vec::as_slice);
        MergeSorted { a: filed, b: &self.anywhere }
    }
}

/// The first segment of a normalized path: `admin` in `/admin/x`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// The first segment every path matching `pattern` must have, if the
/// pattern pins one down.
fn required_first_segment(pattern: &PathPattern) -> Option<String> {
    let literal = |s: &str, is_special: fn(char) -> bool| {
        let rest = s.strip_prefix('/')?;
        let (segment, _) = rest.split_once('/')?;
        (!segment.is_empty() && !segment.chars().any(is_special)).then(|| segment.to_string())
    };
    match pattern {
        PathPattern::Prefix(prefix) => literal(prefix, |_| false),
        PathPattern::Glob(glob) => literal(glob.glob().glob(), |c| "*?[]{}\\!".contains(c)),
        PathPattern::Regex(regex) => {
            let source = regex.as_str();
            // An alternation anywhere could let the regex match elsewhere.
            if source.contains('|') {
                return None;
            }
            literal(source.strip_prefix('^')?, |c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        }
    }
}

/// Merges two ascending lists of indices.
struct MergeSorted<'a> {
    a: &'a [usize],
    b: &'a [usize],
}

impl Iterator for MergeSorted<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let (head, rest) = if take_a { self.a.split_first()? } else { self.b.split_first()? };
        if take_a {
            self.a = rest;
        } else {
            self.b = rest;
        }
        Some(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(kind: &str, source: &str) -> PathPattern {
        match kind {
            "path" => PathPattern::prefix(source.into()).unwrap(),
            "glob" => PathPattern::glob(source).unwrap(),
            _ => PathPattern::regex(source).unwrap(),
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
            ("regex", "^/api/v[0-9]+/", Some("api")),
            ("regex", "^/api/|^/other/", None),
            ("regex", "^/a.i/", None),
            ("regex", "/api/", None),
            ("regex", "\\.php$", None),
        ];
        for (kind, source, expected) in cases {
            assert_eq!(required_first_segment(&pattern(kind, source)).as_deref(), expected, "{kind} {source}");
        }
    }

    #[test]
    fn candidates_keep_rule_order() {
        let merged: Vec<usize> = MergeSorted { a: &[1, 4, 9], b: &[0, 5, 6, 10] }.collect();
        assert_eq!(merged, [0, 1, 4, 5, 6, 9, 10]);
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
        let subject = Subject { username: "u", groups: &[], second_factors: crate::methods::MethodTimes::default(), trusted_browser: false, confidence: Confidence::High };
        let paths = [
            "/", "/admin", "/admin/", "/administrator", "/admin/x.php", "/files/a/b.pdf", "/files/b.pdf", "/files/x",
            "/api/v1/x", "/api/v1", "/api/x", "/public/secret", "/public/x", "/x/secret", "/index.php", "/apix/v1/",
        ];
        for path in paths {
            for method in [http::Method::GET, http::Method::POST] {
                let request = Request { method: &method, path, query: None, headers: &headers, ip: [192, 0, 2, 1].into(), geo: &geo, now: 0 };
                for subject in [None, Some(&subject)] {
                    let fast = decide(app, &settings, &request, subject);
                    let full = explain(app, &settings, &request, subject).outcome;
                    assert_eq!(fast, full, "{method} {path}");
                }
            }
        }
    }
}

