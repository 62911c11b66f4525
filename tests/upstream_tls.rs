//! `https://` upstreams are verified: against the system's roots by
//! default, a configured CA, the upstream's name (or `server_name`), with a
//! client certificate when the upstream asks for one, and not at all only
//! when `insecure_skip_verify` says so.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::killable::read_request_head;
use common::*;
use pingora::tls::{CertificateDer, RootCertStore, ServerConfig, TlsAcceptor, WebPkiClientVerifier};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;

const UPSTREAM_NAME: &str = "upstream.internal";

/// A CA, a server certificate it signed for `upstream.internal`, and a
/// client certificate it signed, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
    server: (String, String),
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issue = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![purpose];
            (params.signed_by(&key, &ca, &ca_key).unwrap().pem(), key.serialize_pem())
        };
        let server = issue(vec![UPSTREAM_NAME.into()], ExtendedKeyUsagePurpose::ServerAuth);
        let client = issue(vec!["gateway.internal".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), &client.0).unwrap();
        std::fs::write(dir.path().join("client-key.pem"), &client.1).unwrap();
        Self { dir, server }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An upstream that answers `over tls` to each request; with
    /// `client_ca`, only to clients with a certificate that CA signed.
    async fn upstream(&self, client_ca: Option<&Path>) -> SocketAddr {
        pingora::tls::install_default_crypto_provider();
        let chain = pem_certificates(self.server.0.as_bytes());
        let key = rustls_pemfile::private_key(&mut self.server.1.as_bytes()).unwrap().unwrap();
        let builder = ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in pem_certificates(&std::fs::read(ca).unwrap()) {
                    roots.add(cert).unwrap();
                }
                builder.with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap())
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).unwrap();
        serve_tls(TlsAcceptor::from(Arc::new(config))).await
    }
}

fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..]).map(|c| c.unwrap()).collect()
}

async fn serve_tls(acceptor: TlsAcceptor) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                if read_request_head(&mut tls).await.is_none() {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nover tls\n";
                let _ = tls.write_all(answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// The status of a request through a gateway whose app has `upstream`
/// with the `upstream_tls` settings given.
async fn status_through(upstream: SocketAddr, tls_settings: &str) -> u16 {
    let apps = format!(
        "[[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"https://{upstream}\"]\nupstream_tls = {{ {tls_settings} }}\n\n\
         [[apps.rules]]\npath = \"/\"\npolicy = \"bypass\"\n"
    );
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let response = gw.api_client().get(gw.app("/report")).send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.text().await.unwrap(), "over tls\n");
    }
    status
}

#[tokio::test]
async fn an_upstream_certificate_is_checked_against_the_configured_ca_and_name() {
    let pki = Pki::new();
    let upstream = pki.upstream(None).await;
    let ca = pki.path("ca.pem").display().to_string();
    assert_eq!(status_through(upstream, "").await, 502, "not signed by a system root");
    let trusted = format!("ca_file = \"{ca}\", server_name = \"{UPSTREAM_NAME}\"");
    assert_eq!(status_through(upstream, &trusted).await, 200);
    let wrong_name = format!("ca_file = \"{ca}\", server_name = \"other.internal\"");
    assert_eq!(status_through(upstream, &wrong_name).await, 502, "the certificate names another host");
    let by_address = format!("ca_file = \"{ca}\"");
    assert_eq!(status_through(upstream, &by_address).await, 502, "the certificate does not name 127.0.0.1");
    assert_eq!(status_through(upstream, "insecure_skip_verify = true").await, 200, "told not to verify");
}

#[tokio::test]
async fn an_upstream_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let pki = Pki::new();
    let upstream = pki.upstream(Some(&pki.path("ca.pem"))).await;
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client-key.pem"));
    let base = format!("ca_file = \"{}\", server_name = \"{UPSTREAM_NAME}\"", ca.display());
    assert_eq!(status_through(upstream, &base).await, 502, "without a client certificate");
    let with_client = format!("{base}, client_cert = \"{}\", client_key = \"{}\"", cert.display(), key.display());
    assert_eq!(status_through(upstream, &with_client).await, 200);
}

#[tokio::test]
async fn unusable_tls_files_are_refused_at_start_with_the_file_named() {
    let pki = Pki::new();
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n").unwrap();
    let wrong_key = KeyPair::generate().unwrap();
    std::fs::write(pki.path("other-key.pem"), wrong_key.serialize_pem()).unwrap();
    let cert = pki.path("client.pem").display().to_string();
    let cases = [
        (format!("ca_file = \"{}\"", garbage.display()), "garbage.pem"),
        (format!("ca_file = \"{}\"", pki.path("missing.pem").display()), "missing.pem"),
        (format!("client_cert = \"{cert}\", client_key = \"{cert}\""), "no private key"),
        (format!("client_cert = \"{cert}\", client_key = \"{}\"", pki.path("other-key.pem").display()), "other-key.pem"),
    ];
    for (settings, expected) in cases {
        let text = format!(
            "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n\n\
             [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"https://127.0.0.1:1\"]\nupstream_tls = {{ {settings} }}\n"
        );
        let config_path = pki.path("stepgate.toml");
        std::fs::write(&config_path, text).unwrap();
        std::fs::write(pki.path("users.toml"), users_file()).unwrap();
        let config = stepgate::config::Config::load(&config_path).expect("the file itself is valid");
        let secrets = Some(stepgate::crypto::Secrets::from_master(&MASTER_KEY));
        let clock: Arc<dyn stepgate::clock::Clock> = Arc::new(stepgate::clock::ManualClock::new());
        let error = match stepgate::gateway::Gateway::build(config, clock, secrets).await {
            Ok(_) => panic!("{settings}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(expected), "{settings}: {error}");
    }
}

#[test]
fn a_client_certificate_without_its_key_is_a_configuration_error() {
    let text = "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n\n\
                [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"https://127.0.0.1:1\"]\n\
                upstream_tls = { client_cert = \"client.pem\" }\n";
    let error = stepgate::config::Config::parse(text, Path::new("stepgate.toml")).unwrap_err().to_string();
    assert!(error.contains("both client_cert and client_key"), "{error}");
}
