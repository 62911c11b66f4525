//! The log lines a test's own thread writes, to count them.
//!
//! One process-wide subscriber writes each line to the buffer of the thread
//! that logged it. A subscriber per thread would lose lines: tracing decides
//! once for the whole process whether a log statement is wanted, asking the
//! subscriber of whichever thread reaches it first, so a statement first
//! reached on a thread that captures nothing would be dropped everywhere.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

/// The log lines written on one thread while it captures them.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURING: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Captures until dropped.
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURING.with(|capturing| capturing.borrow_mut().take());
    }
}

impl Logs {
    /// Captures the lines this thread logs (a test's runtime, and the
    /// tasks on it, run on the test's thread) until the guard is dropped.
    pub fn capture() -> (Logs, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber =
                tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_ansi(false).with_writer(|| ThisThread).finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other process-wide logging in a test that captures logs");
        });
        let logs = Logs::default();
        CAPTURING.with(|capturing| *capturing.borrow_mut() = Some(logs.clone()));
        (logs, Capture(()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn count(&self, message: &str) -> usize {
        self.text().lines().filter(|line| line.contains(message)).count()
    }
}

/// Writes to the buffer of the thread that logs, if it captures.
struct ThisThread;

impl Write for ThisThread {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURING.with(|capturing| {
            if let Some(logs) = capturing.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
