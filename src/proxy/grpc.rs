//! What the forwarding path does differently for gRPC: the client's deadline
//! (`grpc-timeout`) bounds the wait for response headers, and limpet's own failures are
//! answered as gRPC statuses, which gRPC clients read, instead of HTTP error pages, which
//! they report as protocol errors.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use super::error::ProxyError;
use super::Body;

/// `application/grpc`, with or without a `+proto`-style suffix or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The call's deadline from `grpc-timeout` (at most 8 digits and a unit, per the gRPC
/// over HTTP/2 spec); `None` when absent or malformed.
pub fn deadline(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC status codes limpet answers with.
const INTERNAL: u16 = 13;
const UNIMPLEMENTED: u16 = 12;
const RESOURCE_EXHAUSTED: u16 = 8;
const DEADLINE_EXCEEDED: u16 = 4;
const UNAVAILABLE: u16 = 14;

/// A trailers-only gRPC response for one of limpet's failures. The codes follow the
/// spec's HTTP-to-gRPC mapping (a 404 is UNIMPLEMENTED, 502/503/504 UNAVAILABLE, which
/// clients may retry), except a wait bounded by the client's own deadline, which is
/// DEADLINE_EXCEEDED as the client would report itself. Backend addresses stay out of the
/// message, as they stay out of HTTP error pages.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let (code, message): (u16, String) = match e {
        ProxyError::Timeout {
            timeout_ms,
            deadline: true,
            ..
        } => (
            DEADLINE_EXCEEDED,
            format!("backend did not answer within the call's deadline ({timeout_ms} ms)"),
        ),
        ProxyError::Timeout { timeout_ms, .. } => (
            UNAVAILABLE,
            format!("backend did not answer within {timeout_ms} ms"),
        ),
        ProxyError::NoRoute { .. } => (UNIMPLEMENTED, "no route for this call".into()),
        ProxyError::TooLarge { max } => (
            RESOURCE_EXHAUSTED,
            format!("request larger than {max} bytes"),
        ),
        ProxyError::BadRequest(why) => (INTERNAL, format!("bad request: {why}")),
        other => (
            UNAVAILABLE,
            other
                .status()
                .canonical_reason()
                .unwrap_or("unavailable")
                .to_ascii_lowercase(),
        ),
    };
    let mut response = Response::new(Body::Right(Default::default()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// grpc-message is percent-encoded: anything outside printable ASCII, and `%` itself.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC; charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!with("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn deadlines() {
        let of = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            deadline(&h)
        };
        assert_eq!(of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(of("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(of("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(of("123456789S"), None, "more than 8 digits");
        assert_eq!(of("5s"), None, "units are case-sensitive");
        assert_eq!(of("S"), None);
        assert_eq!(of("-5S"), None);
        assert_eq!(deadline(&HeaderMap::new()), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% é\n"), "50%25 %C3%A9%0A");
    }
}
