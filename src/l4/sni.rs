//! The server name (SNI) of a TLS ClientHello, read without terminating TLS, so that a
//! passthrough route can be chosen and the client's bytes forwarded untouched.
//!
//! Pure: no I/O. The caller appends what it reads from the client to one buffer and calls
//! [`parse`] after every read until the answer is no longer [`Hello::Incomplete`]; it stops
//! reading at [`MAX_HELLO`] bytes. Only the framing is checked, never the cryptography: the
//! backend does the handshake.

/// The most a client may send before its ClientHello is complete. One TLS record holds
/// 16 KiB; real ClientHellos, even with post-quantum key shares, are under 2 KiB.
pub const MAX_HELLO: usize = 16 * 1024;

/// TLS record content type of handshake messages (RFC 8446, section 5.1).
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello (RFC 8446, section 4).
const CLIENT_HELLO: u8 = 1;
/// Extension number of server_name (RFC 6066, section 3).
const SERVER_NAME: u16 = 0;
/// The largest record fragment a peer may send (RFC 8446, section 5.1).
const MAX_FRAGMENT: usize = 1 << 14;

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello has begun but is not complete: read more.
    Incomplete,
    /// Not a TLS handshake at all: some other protocol (or nothing to route by name).
    NotTls,
    /// A complete ClientHello. The name is lower-case, without a final dot; `None` when the
    /// client sent no server_name (an IP address, or an old client).
    ClientHello { server_name: Option<String> },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SniError {
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    #[error("TLS ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
}

/// Reads the ClientHello at the start of `buf`, which may span several TLS records (the
/// handshake layer may fragment a message across records, RFC 8446 section 5.1).
pub fn parse(buf: &[u8]) -> Result<Hello, SniError> {
    match buf {
        [] => return Ok(Hello::Incomplete),
        [first, ..] if *first != HANDSHAKE => return Ok(Hello::NotTls),
        // Every TLS version, 1.0 to 1.3, writes 3 as the record version's major byte.
        [_, major, ..] if *major != 3 => return Ok(Hello::NotTls),
        _ => {}
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return incomplete(buf);
        };
        if header[0] != HANDSHAKE {
            return Err(SniError::Malformed(
                "a non-handshake record before the ClientHello ended",
            ));
        }
        if header[1] != 3 {
            return Err(SniError::Malformed("record version is not TLS"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        if len > MAX_FRAGMENT {
            return Err(SniError::Malformed("record longer than TLS allows"));
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return incomplete(buf);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != CLIENT_HELLO {
            return Err(SniError::Malformed(
                "the first handshake message is not a ClientHello",
            ));
        }
        let body_len = u24(&handshake[1..4]);
        if body_len + 4 > MAX_HELLO {
            return Err(SniError::TooLarge);
        }
        if let Some(body) = handshake.get(4..4 + body_len) {
            return client_hello(body).map(|server_name| Hello::ClientHello { server_name });
        }
    }
}

/// More bytes may complete the hello, unless the buffer is already at the bound.
fn incomplete(buf: &[u8]) -> Result<Hello, SniError> {
    if buf.len() >= MAX_HELLO {
        Err(SniError::TooLarge)
    } else {
        Ok(Hello::Incomplete)
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The server name of a complete ClientHello body (RFC 8446 section 4.1.2; the TLS 1.2 form
/// of RFC 5246 section 7.4.1.2 has the same layout up to the extensions).
fn client_hello(body: &[u8]) -> Result<Option<String>, SniError> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let session_id = r.u8()?;
    if session_id > 32 {
        return Err(SniError::Malformed("session id longer than 32 bytes"));
    }
    r.take(usize::from(session_id))?;
    let suites = r.u16()?;
    if suites < 2 || suites % 2 != 0 {
        return Err(SniError::Malformed("bad cipher suite list"));
    }
    r.take(usize::from(suites))?;
    let compressions = r.u8()?;
    if compressions == 0 {
        return Err(SniError::Malformed("empty compression method list"));
    }
    r.take(usize::from(compressions))?;
    // SSL 3.0-era clients may end here: no extensions, so no name.
    if r.0.is_empty() {
        return Ok(None);
    }
    let len = r.u16()?;
    let mut extensions = Reader(r.take(usize::from(len))?);
    if !r.0.is_empty() {
        return Err(SniError::Malformed("bytes after the extensions"));
    }
    let mut name = None;
    let mut seen = false;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = extensions.u16()?;
        let data = extensions.take(usize::from(len))?;
        if kind == SERVER_NAME {
            // RFC 8446 section 4.2: an extension appears at most once.
            if seen {
                return Err(SniError::Malformed("two server_name extensions"));
            }
            seen = true;
            name = server_name(data)?;
        }
    }
    Ok(name)
}

/// The host_name entry of a server_name extension (RFC 6066 section 3).
fn server_name(data: &[u8]) -> Result<Option<String>, SniError> {
    if data.is_empty() {
        return Ok(None);
    }
    let mut r = Reader(data);
    let len = r.u16()?;
    let mut list = Reader(r.take(usize::from(len))?);
    if !r.0.is_empty() {
        return Err(SniError::Malformed("bytes after the server name list"));
    }
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let len = list.u16()?;
        let name = list.take(usize::from(len))?;
        // Only host_name (0) is defined; other types are skipped as the RFC allows.
        if kind != 0 {
            continue;
        }
        let valid = !name.is_empty()
            && name.len() <= 255
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(SniError::Malformed("the server name is not a host name"));
        }
        let text = String::from_utf8_lossy(name).to_ascii_lowercase();
        return Ok(Some(text.trim_end_matches('.').to_owned()));
    }
    Ok(None)
}

/// A cursor whose every read is bounds-checked: a short field means a malformed hello,
/// because the length prefixes already said it was complete.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SniError> {
        if self.0.len() < n {
            return Err(SniError::Malformed(
                "a length runs past its enclosing field",
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SniError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SniError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod fixture {
    /// A minimal TLS 1.2-style ClientHello naming `name` (none when `None`), in one record.
    pub fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[3, 3]);
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut extensions = Vec::new();
        if let Some(name) = name {
            let n = name.as_bytes();
            let mut list = vec![0];
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
            let mut ext = (list.len() as u16).to_be_bytes().to_vec();
            ext.extend_from_slice(&list);
            extensions.extend_from_slice(&0u16.to_be_bytes());
            extensions.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            extensions.extend_from_slice(&ext);
        }
        // An unrelated extension (supported_versions) so the walk has something to skip.
        extensions.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        records(&handshake, handshake.len())
    }

    /// `handshake` cut into records of at most `size` bytes each.
    pub fn records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{client_hello, records};
    use super::*;

    /// A ClientHello captured from `openssl s_client -servername db.example.org` (OpenSSL
    /// 3.0, TLS 1.3 with a key share): a real client's layout, not only our own builder's.
    const OPENSSL: &[u8] = include_bytes!("testdata/openssl_client_hello.bin");

    fn name(bytes: &[u8]) -> Result<Hello, SniError> {
        parse(bytes)
    }

    fn found(name: &str) -> Hello {
        Hello::ClientHello {
            server_name: Some(name.into()),
        }
    }

    #[test]
    fn reads_a_real_openssl_client_hello() {
        assert_eq!(name(OPENSSL), Ok(found("db.example.org")));
        // Every shorter prefix is incomplete, never an error or a wrong answer: this is what
        // the data plane sees when the hello arrives in pieces.
        for cut in 0..OPENSSL.len() {
            assert_eq!(name(&OPENSSL[..cut]), Ok(Hello::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn names_are_lower_cased_and_without_a_final_dot() {
        assert_eq!(
            name(&client_hello(Some("API.Example.ORG."))),
            Ok(found("api.example.org"))
        );
        assert_eq!(
            name(&client_hello(None)),
            Ok(Hello::ClientHello { server_name: None })
        );
    }

    #[test]
    fn a_hello_fragmented_across_records_is_reassembled() {
        let one = client_hello(Some("a.example.org"));
        let handshake = &one[5..];
        for size in [1, 3, 4, 17, 100] {
            let many = records(handshake, size);
            assert_eq!(name(&many), Ok(found("a.example.org")), "records of {size}");
            assert_eq!(name(&many[..many.len() - 1]), Ok(Hello::Incomplete));
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_its_business() {
        let mut b = client_hello(Some("a.example.org"));
        b.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(name(&b), Ok(found("a.example.org")));
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(name(b"GET / HTTP/1.1\r\n"), Ok(Hello::NotTls));
        assert_eq!(name(b"*1\r\n$4\r\nPING\r\n"), Ok(Hello::NotTls));
        assert_eq!(name(&[22, 1, 0]), Ok(Hello::NotTls));
        assert_eq!(name(&[]), Ok(Hello::Incomplete));
        assert_eq!(name(&[22]), Ok(Hello::Incomplete));
    }

    #[test]
    fn garbage_that_looks_like_tls_is_malformed() {
        let good = client_hello(Some("a.example.org"));
        // A ServerHello (type 2) instead of a ClientHello.
        let mut b = good.clone();
        b[5] = 2;
        assert!(matches!(name(&b), Err(SniError::Malformed(_))));
        // An alert record in the middle of a fragmented hello.
        let mut b = records(&good[5..], 10);
        b[15] = 21;
        assert!(matches!(name(&b), Err(SniError::Malformed(_))));
        // Zero-length record.
        assert!(matches!(
            name(&[22, 3, 1, 0, 0]),
            Err(SniError::Malformed(_))
        ));
        // A name with a NUL in it.
        let b = client_hello(Some("a\0b.example.org"));
        assert!(matches!(name(&b), Err(SniError::Malformed(_))));
        // Lengths that run past their field: flip the session id length to 200.
        let mut b = good.clone();
        b[5 + 4 + 34] = 200;
        assert!(matches!(name(&b), Err(SniError::Malformed(_))));
        // Every single-byte corruption is either still fine, incomplete or an error: never a
        // panic (a hostile client gets no more than a closed connection).
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = name(&b);
            }
        }
    }

    #[test]
    fn an_announced_giant_is_refused_early() {
        let mut b = vec![22, 3, 1, 0, 4, 1, 0x01, 0, 0];
        assert_eq!(name(&b), Err(SniError::TooLarge));
        b = vec![22, 3, 1, 0x40, 0];
        b.resize(MAX_HELLO, 0);
        assert!(name(&b).is_err());
    }
}
