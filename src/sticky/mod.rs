//! Sticky sessions: the cookie's name and the codec of its value.
//!
//! Pure except for reading the key file at start-up. The name follows Traefik v1 so that clients keep their sessions when an
//! operator swaps Traefik for limpet; the value is the backend URL, as in the Swarm tutorial.

mod name;
pub mod seal;

pub use name::{sanitize_cookie_name, traefik_v1_cookie_name};
pub use seal::Keyring;

/// The `hash` cookie mode's value for a backend URL: 16 hex digits of FNV-1a. Opaque to a
/// casual reader but unkeyed, so anyone who knows the URL can compute it.
pub fn url_hash(url: &str) -> String {
    format!("{:016x}", crate::table::stable_hash(url.as_bytes()))
}

/// Finds the value of cookie `name` in a `Cookie` request header, borrowing from it.
///
/// Pairs that do not parse are skipped rather than failing the whole header: a hostile or
/// broken cookie elsewhere in the header must not cost the client its session.
pub fn find_cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        // ASCII trimming: a header value that is a `str` holds nothing else, and the
        // Unicode-aware `trim` cost more than the rest of the search.
        (k.trim_ascii() == name).then(|| {
            let v = v.trim_ascii();
            // RFC 6265 allows a DQUOTE-wrapped value; curl and browsers send it as written.
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tutorial_cookie_among_others() {
        let h = "a=1; _a49bc=http://10.0.0.5:8000; b=2";
        assert_eq!(find_cookie(h, "_a49bc"), Some("http://10.0.0.5:8000"));
        assert_eq!(find_cookie(h, "missing"), None);
    }

    #[test]
    fn garbage_pairs_are_skipped() {
        let h = "garbage; ;=; _a49bc=\"http://10.0.0.4:8000\"";
        assert_eq!(find_cookie(h, "_a49bc"), Some("http://10.0.0.4:8000"));
    }

    #[test]
    fn name_must_match_exactly() {
        assert_eq!(find_cookie("x_a49bc=1", "_a49bc"), None);
    }
}
