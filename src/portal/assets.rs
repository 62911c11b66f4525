//! CSS and JavaScript from `static/`, built into the binary and served
//! with cache headers. The theme sheet carries the configured accent colour,
//! so pages need no inline style.

use axum::extract::{Extension, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{error_page, PortalState};
use crate::crypto::{hex, sha256};

const STYLE: &str = include_str!("../../static/style.css");
const SCRIPT: &str = include_str!("../../static/stepgate.js");
const WEBAUTHN_SCRIPT: &str = include_str!("../../static/webauthn.js");

pub async fn serve(Extension(gateway): Extension<PortalState>, Path(name): Path<String>, request_headers: HeaderMap) -> Response {
    let (body, content_type) = match name.as_str() {
        "style.css" => (STYLE.to_string(), "text/css; charset=utf-8"),
        "stepgate.js" => (SCRIPT.to_string(), "text/javascript; charset=utf-8"),
        "webauthn.js" => (WEBAUTHN_SCRIPT.to_string(), "text/javascript; charset=utf-8"),
        "theme.css" => (format!(":root {{ --accent: {}; }}\n", gateway.config.branding.accent_color.0), "text/css; charset=utf-8"),
        _ => return error_page(&gateway, StatusCode::NOT_FOUND, "Not found", "There is no such file."),
    };
    let etag = format!("\"{}\"", hex(&sha256(body.as_bytes())[..8]));
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        (header::ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""))),
    ];
    let unchanged = request_headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
