//! A real OpenID provider (node-oidc-provider, `tests/oidc/provider.mjs`)
//! on a free loopback port, started by the test with Node.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CLIENT_SECRET: &str = "client secret 6a0f";

pub struct OidcProvider {
    pub addr: SocketAddr,
    _child: Child,
}

impl OidcProvider {
    /// A provider whose clients send browsers back to the gateway on
    /// app.test or app.localhost, any port.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// With `conform`, profile claims (groups among them) are served by the
    /// UserInfo endpoint only, as OpenID Connect Core has it.
    pub async fn start_with(conform: bool) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(root.join("node_modules/oidc-provider").is_dir(), "the OpenID tests need oidc-provider: run scripts/setup");
        let mut child = Command::new("node")
            .arg(root.join("provider.mjs"))
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("CONFORM", if conform { "1" } else { "0" })
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Node.js 20 or newer)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
            match line {
                Ok(Ok(Some(line))) if line.starts_with("ready ") => {
                    let port: u16 = line["ready ".len()..].parse().expect("the provider's port");
                    return Self { addr: SocketAddr::from(([127, 0, 0, 1], port)), _child: child };
                }
                Ok(Ok(Some(_))) => continue,
                other => panic!("the OpenID provider did not start: {other:?}"),
            }
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Who the next interaction signs in, and what it says it did.
    pub async fn next_login(&self, account: &str, amr: &[&str], acr: Option<&str>) {
        let body = serde_json::json!({ "account": account, "amr": amr, "acr": acr });
        let response = reqwest::Client::new().post(format!("{}/test/next", self.issuer())).json(&body).send().await.unwrap();
        assert!(response.status().is_success());
    }
}
