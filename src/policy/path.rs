//! The path a rule is matched against must be the path the app will act
//! on. Percent-escapes are decoded, repeated slashes collapsed, path
//! parameters (`/admin;jsessionid=1/`, which servlet containers ignore)
//! dropped, and paths whose meaning differs between servers (dot segments,
//! also as `..;`, backslashes) are refused rather than guessed.

use std::borrow::Cow;

use crate::config::{fold_case, PathMatching};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    #[error("the path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("the path has a control character")]
    Control,
    #[error("a path segment is a name Windows would read as another (a trailing dot or space, `:`, a `~1` short name or a wildcard)")]
    WindowsName,
}

/// The path rules are matched against, for an app whose server compares
/// paths as `matching` says: normalized; folded when the server ignores
/// case; and, for Windows servers, refused when a segment is a name
/// Windows resolves to another file (`admin.`, `admin `, `admin::$DATA`,
/// `ADMINI~1`), since no rule could say which.
pub fn canonical_path(raw: &str, matching: PathMatching) -> Result<String, PathError> {
    let path = normalize_path(raw)?;
    if matching == PathMatching::Windows && path.split('/').any(is_ambiguous_on_windows) {
        return Err(PathError::WindowsName);
    }
    Ok(if matching.folds_case() { fold_case(&path) } else { path.into_owned() })
}

fn is_ambiguous_on_windows(segment: &str) -> bool {
    let short_name = segment.split('~').skip(1).any(|after| after.starts_with(|c: char| c.is_ascii_digit()));
    segment.ends_with(['.', ' ']) || segment.contains([':', '*', '?', '<', '>', '"', '|']) || short_name
}

/// The path (without query) as rules see it.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = if raw.contains('%') { Cow::Owned(percent_decode(raw)?) } else { Cow::Borrowed(raw) };
    if decoded.contains('\\') {
        return Err(PathError::Backslash);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    let without_parameters = |segment: &'_ str| segment.split(';').next().unwrap_or("").to_string();
    if decoded.split('/').map(without_parameters).any(|segment| segment == "." || segment == "..") {
        return Err(PathError::DotSegment);
    }
    if !decoded.contains("//") && !decoded.contains(';') {
        return Ok(decoded);
    }
    let segments: Vec<String> = decoded.split('/').map(without_parameters).collect();
    let mut normalized = String::with_capacity(decoded.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        // Empty inner segments are doubled slashes; the last one is a trailing slash.
        if i > 0 && (!segment.is_empty() || last) {
            normalized.push('/');
        }
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

fn percent_decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEscape);
            }
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_reads_the_path_as_its_server_does() {
        use PathMatching::*;
        let cases: &[(&str, PathMatching, Result<&str, PathError>)] = &[
            ("/ADMIN/", Exact, Ok("/ADMIN/")),
            ("/ADMIN/", CaseInsensitive, Ok("/admin/")),
            ("/adm%C4%B1n/", CaseInsensitive, Ok("/admin/")),
            ("/Admin/x", Windows, Ok("/admin/x")),
            ("/admin./", Exact, Ok("/admin./")),
            ("/admin./", Windows, Err(PathError::WindowsName)),
            ("/admin%2e/", Windows, Err(PathError::WindowsName)),
            ("/admin%20", Windows, Err(PathError::WindowsName)),
            ("/admin::$DATA", Windows, Err(PathError::WindowsName)),
            ("/ADMINI~1/", Windows, Err(PathError::WindowsName)),
            ("/admin%3c/", Windows, Err(PathError::WindowsName)),
            ("/home~user/", Windows, Ok("/home~user/")),
            ("/v1/a:b", CaseInsensitive, Ok("/v1/a:b")),
            ("/admin/../x", CaseInsensitive, Err(PathError::DotSegment)),
        ];
        for (raw, mode, expected) in cases {
            assert_eq!(canonical_path(raw, *mode).as_deref().map_err(Clone::clone), expected.clone(), "{raw} {mode:?}");
        }
    }
}
