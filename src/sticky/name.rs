//! Cookie names, computed exactly as Traefik v1 does (`cookie.GetName` in Traefik 1.7).

use sha1::{Digest, Sha1};

/// The name Traefik v1 generates for a backend: `_` followed by the first five hex digits of
/// SHA-1 over `_TRAEFIK_BACKEND_<backend>`. For the tutorial's service `whoami-service` the
/// backend is `backend-whoami-service`, which gives `_a49bc`.
pub fn traefik_v1_cookie_name(backend: &str) -> String {
    let digest = Sha1::new()
        .chain_update(b"_TRAEFIK_BACKEND_")
        .chain_update(backend.as_bytes())
        .finalize();
    let mut name = String::with_capacity(6);
    name.push('_');
    for byte in &digest[..3] {
        name.push_str(&format!("{byte:02x}"));
    }
    name.truncate(6);
    name
}

/// Replaces every character that may not appear in a cookie name (RFC 2616 token) with `_`,
/// as Traefik v1 does for `cookieName`, so a label can never inject attributes.
pub fn sanitize_cookie_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => c,
            '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '.' | '^' | '`' | '|' | '~' => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_cookie_name() {
        assert_eq!(traefik_v1_cookie_name("backend-whoami-service"), "_a49bc");
    }

    #[test]
    fn names_differ_per_backend() {
        assert_ne!(
            traefik_v1_cookie_name("backend-a"),
            traefik_v1_cookie_name("backend-b")
        );
        assert_eq!(traefik_v1_cookie_name("backend-a").len(), 6);
    }

    #[test]
    fn sanitizer_blocks_attribute_injection() {
        assert_eq!(
            sanitize_cookie_name("sess; Domain=evil"),
            "sess__Domain_evil"
        );
        assert_eq!(sanitize_cookie_name("ok-name.1"), "ok-name.1");
    }
}
