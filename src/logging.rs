//! Log output: text or JSON lines, filtered by the configured level or
//! `RUST_LOG`. Access lines go to the `stepgate::access` target and
//! authentication events carry `event` and `outcome` fields.
//!
//! Much of what is logged came from a client, so log lines are hardened:
//! - in text lines every field is escaped, so a line break or a terminal
//!   escape a client sent is written as `\n` or `\u{1b}` and cannot forge a
//!   line (JSON escapes its strings itself);
//! - a line is at most `MAX_LINE_BYTES` and at most `QUEUED_LINES` wait for
//!   the terminal or pipe, so a flood of huge requests cannot fill memory
//!   with log lines;
//! - pingora logs whole requests at debug, cookies and the assertion
//!   included, so its targets stay at info whatever the configured level.

use std::fmt::{self, Write as _};
use std::io;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{self, FormatFields};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::util::TryInitError;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig};

/// Longer lines are shortened before they are queued.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// A JSON string longer than this is cut when its line is too long.
const MAX_JSON_STRING_CHARS: usize = 1024;
/// Lines waiting to be written; past this, new lines are dropped.
const QUEUED_LINES: usize = 4096;
/// Targets that never log below info: pingora's crates log request and
/// response headers at debug.
const PINNED_AT_INFO: &[&str] = &["pingora"];
/// pingora 0.9 logs "failed to acquire reusable stream" at error (and
/// nothing else at error from this module) when one worker thread takes
/// a pooled upstream connection that another thread's idle watcher has
/// not quite let go of; it then opens a new connection, which is routine.
/// Without work stealing that happens a few times a second under load.
const ROUTINE_ERROR_TARGET: &str = "pingora_core::connectors";

/// Starts logging to standard error from a background thread, so a slow
/// terminal or pipe never holds up a request. Keep the guard alive: lines
/// still queued are written when it drops.
pub fn init(config: &LoggingConfig) -> WorkerGuard {
    let level = std::env::var("RUST_LOG").ok().filter(|level| EnvFilter::try_new(level).is_ok()).unwrap_or_else(|| config.level.0.clone());
    let (writer, guard) = NonBlockingBuilder::default().buffered_lines_limit(QUEUED_LINES).lossy(true).finish(io::stderr());
    // A second initialisation (tests start several gateways) is harmless.
    let _ = install(config.format, &level, writer);
    guard
}

/// Makes this the process's logging, writing each line to `writer`, with
/// the filter `level` (pingora pinned at info). Fails when logging is set
/// up already.
pub fn install<W>(format: LogFormat, level: &str, writer: W) -> Result<(), TryInitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // No more verbose than `filter`: the most verbose level of the layers
    // is the one the `log` records of dependencies are checked at, each
    // one costing a filter evaluation when it is above what is written.
    let ceiling = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let pinned = PINNED_AT_INFO
        .iter()
        .fold(Targets::new().with_default(ceiling), |targets, target| targets.with_target(*target, LevelFilter::INFO.min(ceiling)));
    let writer = BoundedLines(writer);
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().fmt_fields(escaped_fields()).with_writer(writer).boxed(),
    };
    let routine = tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.target() == ROUTINE_ERROR_TARGET && *metadata.level() == tracing::Level::ERROR)
    })
    .with_max_level_hint(ceiling);
    tracing_subscriber::registry().with(filter).with(pinned).with(routine).with(output).try_init()
}

/// Text fields as `name=value` (the message as it is), with control
/// characters escaped.
fn escaped_fields() -> impl for<'writer> FormatFields<'writer> + 'static {
    format::debug_fn(|writer, field, value| {
        let mut escaped = Escaped(writer);
        match field.name() {
            "message" => write!(escaped, "{value:?}"),
            name => write!(escaped, "{name}={value:?}"),
        }
    })
    .delimited(" ")
}

/// Writes through, with control characters (and the Unicode line and
/// paragraph separators) as escapes.
struct Escaped<W>(W);

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !text.chars().any(needs_escape) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            match needs_escape(c) {
                true => write!(self.0, "{}", c.escape_default())?,
                false => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Hands each line to the inner writer, shortened when it is too long.
struct BoundedLines<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for BoundedLines<M> {
    type Writer = BoundedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        BoundedLine(self.0.make_writer())
    }
}

struct BoundedLine<W>(W);

impl<W: io::Write> io::Write for BoundedLine<W> {
    /// The formatter writes a whole line at once.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match line.len() <= MAX_LINE_BYTES {
            true => self.0.write_all(line)?,
            false => self.0.write_all(&shortened(line))?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A JSON line with its long strings cut, so it stays JSON; any other line
/// cut at the limit.
fn shortened(line: &[u8]) -> Vec<u8> {
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(line) {
        cut_strings(&mut value);
        if let Ok(mut json) = serde_json::to_vec(&value) {
            if json.len() < MAX_LINE_BYTES {
                json.push(b'\n');
                return json;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&line[..MAX_LINE_BYTES]).into_owned();
    text.push_str(" [cut]\n");
    text.into_bytes()
}

fn cut_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.chars().count() > MAX_JSON_STRING_CHARS => {
            *text = text.chars().take(MAX_JSON_STRING_CHARS).chain(" [cut]".chars()).collect();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(cut_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        write!(Escaped(&mut out), "{text}").unwrap();
        out
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("alice"), "alice");
        assert_eq!(escaped("x\n2026-01-01 INFO forged"), "x\\n2026-01-01 INFO forged");
        assert_eq!(escaped("a\r\u{1b}[31m\u{2028}b"), "a\\r\\u{1b}[31m\\u{2028}b");
    }

    fn written(line: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        io::Write::write_all(&mut BoundedLine(&mut out), line).unwrap();
        out
    }

    #[test]
    fn long_lines_are_shortened_and_json_stays_json() {
        assert_eq!(written(b"short line\n"), b"short line\n");
        let text = written(format!("path={}\n", "a".repeat(100_000)).as_bytes());
        assert!(text.len() < MAX_LINE_BYTES + 16 && text.ends_with(b" [cut]\n"));
        let json = written(format!("{{\"fields\":{{\"path\":\"{}\"}}}}\n", "a".repeat(100_000)).as_bytes());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(value["fields"]["path"].as_str().unwrap().ends_with(" [cut]"));
    }
}
