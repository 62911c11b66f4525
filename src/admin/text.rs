//! The `stepgate admin` commands' human-readable output: aligned tables.

use super::api::{AuditEvent, UserMfa};
use crate::store::AdminTokenRow;

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

/// A Unix time as UTC, to the second.
pub fn time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_else(|| unix.to_string())
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

pub fn users(users: &[UserMfa]) -> String {
    let rows = users
        .iter()
        .map(|user| {
            let factors: Vec<&str> = user.factors.iter().map(|f| f.kind.as_str()).collect();
            vec![
                user.username.clone(),
                user.display_name.clone(),
                user.groups.join(","),
                if factors.is_empty() { "-".into() } else { factors.join(",") },
                user.recovery_codes_left.to_string(),
                user.sessions.len().to_string(),
            ]
        })
        .collect();
    table(&["USER", "NAME", "GROUPS", "FACTORS", "RECOVERY CODES", "SESSIONS"], rows)
}

pub fn user(user: &UserMfa) -> String {
    let mut out = format!(
        "{} ({}, {})\ngroups: {}\nrecovery codes left: {}\n\n",
        user.username,
        user.display_name,
        user.email,
        if user.groups.is_empty() { "-".into() } else { user.groups.join(", ") },
        user.recovery_codes_left
    );
    let factors = user
        .factors
        .iter()
        .map(|f| {
            let last_used = f.last_used.map(time).unwrap_or_else(|| "never".into());
            let flag = if f.possible_clone { "possible clone" } else { "" };
            vec![f.id.clone(), f.kind.clone(), f.name.clone(), time(f.created), last_used, flag.into()]
        })
        .collect();
    out += &table(&["FACTOR", "KIND", "NAME", "CREATED", "LAST USED", ""], factors);
    let sessions = user
        .sessions
        .iter()
        .map(|s| vec![s.id.chars().take(16).collect(), time(s.created), time(s.last_seen), or_dash(s.country.as_deref()), s.amr.join(",")])
        .collect();
    out += "\n";
    out += &table(&["SESSION", "CREATED", "LAST SEEN", "COUNTRY", "AMR"], sessions);
    out += &format!("\ntrusted browsers: {}\n", user.trusted_browsers.len());
    out
}

pub fn audit(events: &[AuditEvent]) -> String {
    let rows = events
        .iter()
        .map(|e| {
            let details = match &e.details {
                serde_json::Value::Object(map) if map.is_empty() => String::new(),
                details => details.to_string(),
            };
            vec![
                time(e.at),
                e.kind.clone(),
                e.outcome.clone(),
                or_dash(e.user.as_deref()),
                e.actor.clone(),
                or_dash(e.ip.as_deref()),
                or_dash(e.country.as_deref()),
                details,
            ]
        })
        .collect();
    table(&["TIME", "EVENT", "OUTCOME", "USER", "ACTOR", "IP", "COUNTRY", "DETAILS"], rows)
}

pub fn tokens(tokens: &[AdminTokenRow], now: i64) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            let expires = match t.expires {
                Some(at) if at <= now => format!("expired {}", time(at)),
                Some(at) => time(at),
                None => "never".into(),
            };
            let groups = if t.groups.is_empty() { "all users".into() } else { t.groups.join(",") };
            vec![
                t.name.clone(),
                t.scopes.join(","),
                groups,
                time(t.created),
                expires,
                t.last_used.map(time).unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(&["NAME", "SCOPES", "GROUPS", "CREATED", "EXPIRES", "LAST USED"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let out = table(&["A", "BB"], vec![vec!["long".into(), "x".into()], vec!["s".into(), "".into()]]);
        assert_eq!(out, "A     BB\nlong  x\ns\n");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
    }
}
