//! Errors of the admin API as RFC 9457 problem details.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::api::ProblemDocument;
use crate::store::StoreError;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into() }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// No user of that name the caller may see: the same answer whether
    /// the user exists or not.
    pub fn no_such_user() -> Self {
        Self::not_found("There is no such user.")
    }

    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "A valid admin API token is needed (Authorization: Bearer TOKEN).")
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        tracing::error!(error = %error, "admin API: store error");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "The store cannot answer now; try again.")
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection.status() {
            status @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY) => status,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let document = ProblemDocument {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&document).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"stepgate admin\""));
        }
        response
    }
}

/// An error answered by axum itself (a path or body its extractors could
/// not read) as a problem document, like every other error.
pub async fn rejections_as_problems(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t == CONTENT_TYPE);
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), MAX_REJECTION_BYTES).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_string();
    Problem::new(status, if detail.is_empty() { status.canonical_reason().unwrap_or("Error").to_string() } else { detail }).into_response()
}

/// The longest rejection text kept in a problem's detail.
const MAX_REJECTION_BYTES: usize = 4096;

/// The problems any operation may answer, for the OpenAPI document.
pub struct Problems;

impl utoipa::IntoResponses for Problems {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let problems = [
            (StatusCode::BAD_REQUEST, "The request is malformed."),
            (StatusCode::UNAUTHORIZED, "No valid token: missing, unknown, revoked or expired."),
            (StatusCode::FORBIDDEN, "The token lacks the scope this needs."),
            (StatusCode::NOT_FOUND, "No such user (or one outside the token's groups), factor or session."),
            (StatusCode::METHOD_NOT_ALLOWED, "That method is not allowed here."),
            (StatusCode::CONFLICT, "The user's state does not allow it."),
            (StatusCode::PAYLOAD_TOO_LARGE, "The body is too large."),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "The body is not JSON."),
            (StatusCode::UNPROCESSABLE_ENTITY, "The JSON does not have the expected fields."),
            (StatusCode::SERVICE_UNAVAILABLE, "The store or the cache cannot answer now."),
        ];
        problems
            .into_iter()
            .map(|(status, description)| {
                let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ProblemDocument"))).build();
                let response = ResponseBuilder::new().description(description).content(CONTENT_TYPE, content).build();
                (status.as_u16().to_string(), RefOr::T(response))
            })
            .collect()
    }
}
