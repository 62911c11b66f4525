//! A client of the admin API, for the `stepgate admin` commands: the same
//! request and response types as the server.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{
    AuditFilter, AuditPage, MfaResetResult, ProblemDocument, RecoveryCodes, SessionsEnded, TicketCreated, TicketRequest, UserFilter,
    UserMfa, UserPage,
};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach the admin API: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{} {}: {}", .0.status, .0.title, .0.detail)]
    Problem(ProblemDocument),
    #[error("the admin API answered {0} without a problem document")]
    Status(StatusCode),
}

pub struct AdminClient {
    base: url::Url,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the API at `url` (`https://host:port`), trusting the
    /// certificate authority in `ca_file` as well as the system's.
    pub fn new(url: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let base = url::Url::parse(url).map_err(|e| ClientError::Setup(format!("--url {url}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Setup(format!("--url {url}: use http:// or https://")));
        }
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none());
        if let Some(file) = ca_file {
            let pem = std::fs::read(file).map_err(|e| ClientError::Setup(format!("{}: {e}", file.display())))?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::Setup(format!("{}: {e}", file.display())))?;
            builder = builder.add_root_certificate(certificate);
        }
        Ok(Self { base, token: token.trim().to_string(), http: builder.build()? })
    }

    pub async fn users(&self, filter: &UserFilter) -> Result<UserPage, ClientError> {
        self.call(Method::GET, &["v1", "users"], Some(filter), None::<&()>).await
    }

    pub async fn user(&self, name: &str) -> Result<UserMfa, ClientError> {
        self.call(Method::GET, &["v1", "users", name], None::<&()>, None::<&()>).await
    }

    pub async fn delete_factor(&self, user: &str, factor: &str) -> Result<(), ClientError> {
        self.call_without_answer(Method::DELETE, &["v1", "users", user, "factors", factor], None::<&()>).await
    }

    pub async fn reset_mfa(&self, user: &str) -> Result<MfaResetResult, ClientError> {
        self.call(Method::POST, &["v1", "users", user, "mfa", "reset"], None::<&()>, None::<&()>).await
    }

    pub async fn recovery_codes(&self, user: &str) -> Result<RecoveryCodes, ClientError> {
        self.call(Method::POST, &["v1", "users", user, "recovery-codes"], None::<&()>, None::<&()>).await
    }

    pub async fn end_sessions(&self, user: &str) -> Result<SessionsEnded, ClientError> {
        self.call(Method::DELETE, &["v1", "users", user, "sessions"], None::<&()>, None::<&()>).await
    }

    pub async fn lift_user_throttle(&self, user: &str) -> Result<(), ClientError> {
        self.call_without_answer(Method::DELETE, &["v1", "users", user, "throttle"], None::<&()>).await
    }

    pub async fn lift_address_throttle(&self, address: IpAddr) -> Result<(), ClientError> {
        self.call_without_answer(Method::DELETE, &["v1", "addresses", &address.to_string(), "throttle"], None::<&()>).await
    }

    pub async fn create_ticket(&self, user: &str, request: &TicketRequest) -> Result<TicketCreated, ClientError> {
        self.call(Method::POST, &["v1", "users", user, "tickets"], None::<&()>, Some(request)).await
    }

    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditPage, ClientError> {
        self.call(Method::GET, &["v1", "audit"], Some(filter), None::<&()>).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: Option<&impl Serialize>,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, self.url(path)?).bearer_auth(&self.token);
        if let Some(query) = query {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = checked(request.send().await?).await?;
        Ok(response.json().await?)
    }

    async fn call_without_answer(&self, method: Method, path: &[&str], body: Option<&impl Serialize>) -> Result<(), ClientError> {
        let mut request = self.http.request(method, self.url(path)?).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        checked(request.send().await?).await.map(drop)
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<url::Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Setup(format!("--url {}: not a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

/// The response if it succeeded, else its problem.
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    match response.json::<ProblemDocument>().await {
        Ok(problem) => Err(ClientError::Problem(problem)),
        Err(_) => Err(ClientError::Status(status)),
    }
}
