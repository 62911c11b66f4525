//! systemd's service notifications (`sd_notify(3)`): one datagram of
//! `KEY=VALUE` lines to the socket `NOTIFY_SOCKET` names. A path, or an
//! abstract socket name written with a leading `@`.
//!
//! The gateway says `READY=1` once its listeners accept, with `MAINPID=`
//! its own pid, so that after an upgrade the new process becomes the
//! unit's main process; and `STOPPING=1` when it stops.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// A way to tell systemd how the service is doing.
pub struct Notifier {
    socket: UnixDatagram,
    target: SocketAddr,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`; `None` when it is not set (the
    /// gateway was not started by systemd) or names no usable socket.
    pub fn from_env() -> Option<Self> {
        let target = std::env::var(NOTIFY_SOCKET_ENV).ok()?;
        match Self::new(&target) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::warn!("{NOTIFY_SOCKET_ENV} `{target}` is not usable, systemd will not hear from the gateway: {e}");
                None
            }
        }
    }

    /// A notifier for the socket at `target`: an absolute path, or `@name`
    /// for an abstract socket.
    pub fn new(target: &str) -> io::Result<Self> {
        let target = match target.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
            None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither an absolute path nor an @name")),
        };
        Ok(Self { socket: UnixDatagram::unbound()?, target })
    }

    /// The listeners accept connections, and this process is the service.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()))
    }

    /// The service is stopping.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.target).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn notifies_a_socket_at_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.ready().unwrap();
        assert_eq!(received(&systemd), format!("READY=1\nMAINPID={}", std::process::id()));
        notifier.stopping().unwrap();
        assert_eq!(received(&systemd), "STOPPING=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("stepgate-test-notify-{:x}", u64::from_le_bytes(crate::crypto::random_bytes::<8>()));
        let systemd = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::new(&format!("@{name}")).unwrap().stopping().unwrap();
        assert_eq!(received(&systemd), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_path() {
        assert_eq!(Notifier::new("run/notify.sock").err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        assert!(Notifier::new("").is_err());
    }
}
