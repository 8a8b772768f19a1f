//! Header rewriting between client and backend: hop-by-hop removal (RFC 9110 §7.6.1) and the
//! `X-Forwarded-*` family that backends behind Traefik already expect.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Facts about the client connection that the forwarded headers report.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub ip: IpAddr,
    /// The entrypoint's port, reported when the Host header carries none.
    pub local_port: u16,
    pub tls: bool,
    /// `ip` and `local_port` as header values, rendered once per connection rather than
    /// once per request.
    ip_value: HeaderValue,
    port_value: HeaderValue,
}

impl ClientConn {
    pub fn new(ip: IpAddr, local_port: u16, tls: bool) -> Self {
        Self {
            ip,
            local_port,
            tls,
            ip_value: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header"),
            port_value: HeaderValue::from(local_port),
        }
    }
}

/// Whether a name is one of the hop-by-hop headers (RFC 9110 §7.6.1). Matched on the
/// name's text, which for the common headers is a table lookup: comparing each name with
/// eight `HeaderName`s cost more than the rest of the response's header handling.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection`: one pass over the names
    // present finds which to remove, cheaper than removing each of the eight by hash. The
    // names in a map are distinct, so at most eight are found.
    let mut found: [Option<HeaderName>; 8] = Default::default();
    let mut count = 0;
    // Whether a `Connection` line names more than the usual keep-alive/close: seen in the
    // same pass, so that the common message needs no second lookup of it.
    let mut lists_names = false;
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name) {
            continue;
        }
        if name == header::CONNECTION {
            lists_names |= !(value.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                || value.as_bytes().eq_ignore_ascii_case(b"close"));
        }
        // `iter` gives a name once per value: only its first value adds it.
        if found[..count].iter().flatten().all(|f| f != name) {
            found[count] = Some(name.clone());
            count += 1;
        }
    }
    if lists_names {
        // Names listed in Connection are rare.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The path prefix a router or service stripped (see `forward`).
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Adds the forwarded headers. `X-Forwarded-For` is appended to, as nginx's
/// `$proxy_add_x_forwarded_for` does; the others describe this hop and are overwritten, so a
/// client cannot claim to have come over TLS.
pub fn add_forwarded(headers: &mut HeaderMap, conn: &ClientConn, host: Option<&HeaderValue>) {
    let ip = conn.ip_value.clone();
    headers.insert(&X_FORWARDED_FOR, forwarded_for(headers, &ip));
    headers.insert(&X_REAL_IP, ip);
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    match host {
        Some(h) => {
            let port = h
                .to_str()
                .ok()
                .and_then(host_port)
                .unwrap_or(conn.local_port);
            headers.insert(&X_FORWARDED_HOST, h.clone());
            let port = if port == conn.local_port {
                conn.port_value.clone()
            } else {
                HeaderValue::from(port)
            };
            headers.insert(&X_FORWARDED_PORT, port);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
            headers.insert(&X_FORWARDED_PORT, conn.port_value.clone());
        }
    }
}

/// Every prior `X-Forwarded-For` line joined into one list, then the client. Repeated lines
/// are one list (RFC 9110 §5.3), as Go's ReverseProxy and so Traefik read them; keeping only
/// the first would drop a hop an upstream proxy appended as its own line and let the
/// client's forged first line pass for it.
fn forwarded_for(headers: &HeaderMap, client: &HeaderValue) -> HeaderValue {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        return client.clone();
    }
    let mut list: Vec<u8> = Vec::new();
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        // Bytes, not text: a line that is not UTF-8 is still a hop and must not vanish.
        let prior = prior.as_bytes().trim_ascii();
        if !prior.is_empty() {
            list.extend_from_slice(prior);
            list.extend_from_slice(b", ");
        }
    }
    list.extend_from_slice(client.as_bytes());
    // Only valid header values and ", " were joined, so this cannot fail.
    HeaderValue::from_bytes(&list).unwrap_or_else(|_| client.clone())
}

/// The host part of a Host header value, without port; brackets kept off IPv6 literals.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn host_port(host: &str) -> Option<u16> {
    let (_, port) = host.rsplit_once(':')?;
    if host.starts_with('[') && !host.contains("]:") {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    /// The names may be listed on any `Connection` line, not only the first; a line of
    /// `close` alone lists none.
    #[test]
    fn names_listed_on_a_later_connection_line_are_stripped_too() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn every_hop_by_hop_name_is_known() {
        let hops = [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            header::PROXY_AUTHENTICATE,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ];
        for name in &hops {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::HOST));
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-te")));
    }

    #[test]
    fn strips_only_what_is_there() {
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-keep") && h.contains_key(header::ACCEPT));
    }

    #[test]
    fn forwarded_headers_append_for_and_overwrite_the_rest() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let conn = ClientConn::new("10.0.0.2".parse().unwrap(), 80, false);
        add_forwarded(
            &mut h,
            &conn,
            Some(&HeaderValue::from_static("app.example:8080")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-real-ip"], "10.0.0.2");
    }

    #[test]
    fn repeated_forwarded_for_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.append("x-forwarded-for", HeaderValue::from_static(""));
        let later = HeaderValue::from_static("198.51.100.7, 192.0.2.1 ");
        h.append("x-forwarded-for", later);
        let conn = ClientConn::new("10.0.0.2".parse().unwrap(), 80, false);
        add_forwarded(&mut h, &conn, None);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        let joined = "203.0.113.9, 198.51.100.7, 192.0.2.1, 10.0.0.2";
        assert_eq!(h["x-forwarded-for"], joined);
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("a.example"), "a.example");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_port("[::1]:81"), Some(81));
        assert_eq!(host_port("[::1]"), None);
    }
}
