//! The TLS settings of an app's `https://` upstreams, read and checked once
//! when the configuration loads: a certificate or key that cannot be used
//! is a start-up (or reload) error, never a failure on the request path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::prelude::HttpPeer;
use pingora::tls::{CertificateDer, ClientConfig, PrivateKeyDer, RootCertStore};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::UpstreamTls;

#[derive(Debug, thiserror::Error)]
#[error("upstream_tls: {path}: {why}")]
pub struct TlsFileError {
    path: String,
    why: String,
}

impl TlsFileError {
    fn new(path: &Path, why: impl std::fmt::Display) -> Self {
        Self { path: path.display().to_string(), why: why.to_string() }
    }
}

/// What a peer needs to verify its upstream and, if asked, be verified.
#[derive(Default)]
pub struct PeerTls {
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
    server_name: Option<String>,
    skip_verify: bool,
}

impl PeerTls {
    pub fn load(config: &UpstreamTls) -> Result<Self, TlsFileError> {
        let ca = match &config.ca_file {
            Some(path) => Some(read_certificates(path)?.into_iter().map(|der| WrappedX509::new(der, parse_x509)).collect()),
            None => None,
        };
        let client = match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => Some(Arc::new(read_client_identity(cert, key)?)),
            _ => None,
        };
        let server_name = config.server_name.as_ref().map(|name| name.0.clone());
        Ok(Self { ca, client, server_name, skip_verify: config.insecure_skip_verify })
    }

    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
        if let Some(name) = &self.server_name {
            peer.sni = name.clone();
        }
        peer.options.verify_cert = !self.skip_verify;
        peer.options.verify_hostname = !self.skip_verify;
    }
}

/// Every certificate in a PEM file, each one checked to parse.
fn read_certificates(path: &PathBuf) -> Result<Vec<Vec<u8>>, TlsFileError> {
    let pem = std::fs::read(path).map_err(|e| TlsFileError::new(path, e))?;
    let mut certificates = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| TlsFileError::new(path, format!("not a PEM certificate file: {e}")))?;
        x509_parser::parse_x509_certificate(&der).map_err(|e| TlsFileError::new(path, format!("a certificate does not parse: {e}")))?;
        certificates.push(der.to_vec());
    }
    match certificates.is_empty() {
        true => Err(TlsFileError::new(path, "no certificate in the file")),
        false => Ok(certificates),
    }
}

/// A client certificate chain and its key, checked to belong together.
fn read_client_identity(cert_path: &PathBuf, key_path: &PathBuf) -> Result<CertKey, TlsFileError> {
    let chain = read_certificates(cert_path)?;
    let pem = std::fs::read(key_path).map_err(|e| TlsFileError::new(key_path, e))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsFileError::new(key_path, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| TlsFileError::new(key_path, "no private key in the file"))?;
    let key_der = key.secret_der().to_vec();
    // The form pingora reads the key back in, when it connects.
    PrivateKeyDer::try_from(key_der.clone()).map_err(|e| TlsFileError::new(key_path, e))?;
    pingora::tls::install_default_crypto_provider();
    ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain.iter().map(|der| CertificateDer::from(der.clone())).collect(), key)
        .map_err(|e| TlsFileError::new(key_path, format!("does not fit the certificate: {e}")))?;
    Ok(CertKey::new(chain, key_der))
}
