//! A real SMTP server on loopback (Python's aiosmtpd, from Debian's
//! python3-aiosmtpd): STARTTLS with a certificate from a test CA, then
//! authentication, then each message lands in a directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::free_port;

pub const SMTP_USER: &str = "gateway";
pub const SMTP_PASSWORD: &str = "smtp secret 7f3a";

pub struct SmtpSink {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).unwrap();
        let addr = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/smtp_sink.py");
        // Debian's Python, where python3-aiosmtpd is installed.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(addr.port().to_string())
            .arg(dir.path().join("mail"))
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server-key.pem"))
            .args([SMTP_USER, SMTP_PASSWORD])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (scripts/setup installs python3-aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"), "the SMTP server did not start: {ready:?}");
        Self { addr, dir, child }
    }

    /// The CA the server's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[email]` section that sends through this server.
    pub fn email_section(&self, extra: &str) -> String {
        format!(
            "[email]\nserver = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nsender = \"Example Security <security@example.com>\"\n\
             username = \"{SMTP_USER}\"\npassword_env = \"STEPGATE_TEST_SMTP_PASSWORD\"\n{extra}\n",
            self.addr.port(),
            self.ca_file().display()
        )
    }

    /// Where each message lands, as `N.eml`.
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// How many messages were delivered.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml")))
            .count()
    }

    /// The `n`th message (from 1), waiting for it to be delivered.
    pub async fn message(&self, n: usize) -> String {
        let path = self.dir.path().join("mail").join(format!("{n}.eml"));
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("message {n} was not delivered");
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The code a message's subject leads with.
pub fn code_in(message: &str) -> String {
    regex::Regex::new(r"(?m)^Subject: (\d{6}) is your ").unwrap().captures(message).unwrap_or_else(|| panic!("no code in:\n{message}"))[1]
        .to_string()
}
