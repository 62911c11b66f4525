//! Log output: text or JSON lines, filtered by the configured level or
//! `RUST_LOG`. Access lines go to the `stepgate::access` target and
//! authentication events carry `event` and `outcome` fields.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Starts logging to standard error from a background thread, so a slow
/// terminal or pipe never holds up a request. Keep the guard alive: lines
/// still queued are written when it drops.
pub fn init(config: &LoggingConfig) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level.0))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    // A second initialisation (tests start several gateways) is harmless.
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}
