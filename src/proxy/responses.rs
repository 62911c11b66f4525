//! Writing through pingora the answers the gateway gives itself
//! ([`super::answers`]): pages for refusals, the challenge that sends a
//! browser to sign in, the page for a request that could not be proxied.

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::answers::{self, Answer, Challenged, RequestId};
use crate::gateway::Gateway;
use crate::policy::Decision;

/// Writes a branded HTML page with `status`.
pub async fn page(session: &mut Session, gateway: &Gateway, status: u16, title: &str, message: &str) -> Result<()> {
    write(session, gateway, answers::page(gateway, status, title, message)?).await
}

/// Writes the 503 for a request whose store or shared cache is unreachable.
pub async fn unavailable(session: &mut Session, gateway: &Gateway, id: &RequestId) -> Result<()> {
    let answer = answers::unavailable(gateway, &session.req_header().headers, id)?;
    write(session, gateway, answer).await
}

/// Writes the answer to a request the policy challenges.
pub async fn challenge(session: &mut Session, gateway: &Gateway, challenged: &Challenged, decision: Decision) -> Result<()> {
    write(session, gateway, answers::challenge(gateway, challenged, decision)?).await
}

/// The status for a request that could not be proxied, as pingora would
/// choose it, except that an upstream that timed out is a 504; 0 when the
/// client's connection is gone and nothing can be answered.
pub fn status_for_failure(error: &Error) -> u16 {
    use pingora::ErrorSource;
    match (error.etype(), error.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    }
}

/// Writes the branded answer to a request that could not be proxied.
pub async fn proxy_failure(session: &mut Session, gateway: &Gateway, status: u16, id: &RequestId) -> Result<()> {
    let answer = answers::proxy_failure(gateway, &session.req_header().headers, status, id)?;
    write(session, gateway, answer).await
}

/// The URL the client asked the gateway for.
pub fn original_url(session: &Session, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let authority = super::forwarding::request_authority(session).unwrap_or_default();
    let path = session.req_header().uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://{authority}{path}")
}

/// Writes a complete answer with its length and the configured `Server`
/// header.
pub async fn write(session: &mut Session, gateway: &Gateway, answer: Answer) -> Result<()> {
    let Answer { status, headers, body } = answer;
    // Without a case map: the names are the gateway's own, and each line
    // then updates one map, not two.
    let mut header = ResponseHeader::build_no_case(status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        header.append_header(name, value)?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()))?;
    if let Some(server) = &gateway.config.server.server_header {
        header.insert_header(http::header::SERVER, &server.0)?;
    }
    let empty = body.is_empty();
    session.write_response_header(Box::new(header), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_upstream_is_a_504_and_a_gone_client_gets_nothing() {
        let upstream = |kind| *Error::new(kind).into_up();
        let downstream = |kind| *Error::new(kind).into_down();
        assert_eq!(status_for_failure(&upstream(ErrorType::ConnectTimedout)), 504);
        assert_eq!(status_for_failure(&upstream(ErrorType::ReadTimedout)), 504);
        assert_eq!(status_for_failure(&upstream(ErrorType::ConnectRefused)), 502);
        assert_eq!(status_for_failure(&downstream(ErrorType::ReadError)), 0);
        assert_eq!(status_for_failure(&downstream(ErrorType::InvalidHTTPHeader)), 400);
        assert_eq!(status_for_failure(&Error::new(ErrorType::HTTPStatus(413))), 413);
        assert_eq!(status_for_failure(&Error::new(ErrorType::InternalError)), 500);
    }
}
