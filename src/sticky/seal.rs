//! Sealed cookie values: AES-256-GCM over the backend's identity and the issue time, so the
//! value reveals no internal address and cannot be forged or edited.
//!
//! Keys come from a file (a Docker secret) shared by every limpet replica, one per line as
//! `<id> <base64 of 32 bytes>`. The first key seals new cookies; every key opens them, so a
//! key is rotated by putting a new one on top and removing the old one once its cookies
//! have expired. The value is `<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`; the service
//! name is authenticated data, so a cookie sealed for one service is not accepted by another.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

const NONCE_LEN: usize = 12;
/// A sealed cookie issued further in the future than this is refused: replicas' clocks
/// disagree by seconds, not minutes.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read sticky key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sticky key file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("sticky key file {path} holds no key (expected lines `<id> <base64 of 32 random bytes>`, e.g. from `openssl rand -base64 32`)")]
    Empty { path: PathBuf },
}

/// Why a cookie value did not open. Kept apart so that tests can tell the cases apart; the
/// proxy treats them all as "no valid cookie".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed value")]
    Malformed,
    #[error("sealed with an unknown key")]
    UnknownKey,
    #[error("does not authenticate")]
    Forged,
    #[error("expired")]
    Expired,
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys of a key file, newest first.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material; ids are enough to debug rotation.
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| KeyFileError::Line {
                path: path.to_owned(),
                line: n + 1,
                reason,
            };
            let (id, material) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<id> <base64 key>`".into()))?;
            if id.is_empty()
                || id.len() > 16
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(format!("key id `{id}`: 1 to 16 of A-Z a-z 0-9 - _")));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(bad(format!("key id `{id}` appears twice")));
            }
            let bytes = STANDARD
                .decode(material.trim())
                .map_err(|e| bad(format!("key `{id}` is not base64: {e}")))?;
            if bytes.len() != 32 {
                return Err(bad(format!(
                    "key `{id}` is {} bytes; AES-256 needs exactly 32 (`openssl rand -base64 32`)",
                    bytes.len()
                )));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).expect("32 bytes is an AES-256 key");
            keys.push(Key {
                id: id.to_owned(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { keys })
    }

    /// Seals a server identity for `service` with the newest key.
    pub fn seal(&self, service: &str, server_id: &str, now: SystemTime) -> String {
        let key = &self.keys[0];
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut plain = Vec::with_capacity(8 + server_id.len());
        plain.extend_from_slice(&issued.to_be_bytes());
        plain.extend_from_slice(server_id.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        // A nonce must never repeat under one key; with random 96-bit nonces that holds
        // for far more cookies than a key will ever seal.
        getrandom::getrandom(&mut nonce).expect("the OS random source is available");
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: service.as_bytes(),
                },
            )
            .expect("AES-GCM sealing of a short message cannot fail");
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(raw))
    }

    /// Opens a value sealed for `service`, returning the server identity inside.
    pub fn open(
        &self,
        service: &str,
        value: &str,
        now: SystemTime,
        ttl: Option<Duration>,
    ) -> Result<String, OpenError> {
        let (id, data) = value.split_once('.').ok_or(OpenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey)?;
        let raw = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 + 8 {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: service.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Forged)?;
        let (issued, server) = plain.split_at(8);
        let issued = u64::from_be_bytes(issued.try_into().expect("split at 8"));
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if issued > now + MAX_CLOCK_SKEW.as_secs() {
            return Err(OpenError::Forged);
        }
        if ttl.is_some_and(|ttl| now.saturating_sub(issued) > ttl.as_secs()) {
            return Err(OpenError::Expired);
        }
        String::from_utf8(server.to_vec()).map_err(|_| OpenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn ring(text: &str) -> Keyring {
        Keyring::parse(Path::new("keys"), text).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn round_trip_hides_the_identity() {
        let r = ring(&format!("k1 {K1}\n"));
        let v = r.seal("web", "task-abc", at(1_000));
        assert!(v.starts_with("k1."));
        assert!(!v.contains("task-abc"));
        assert_eq!(r.open("web", &v, at(1_010), None).unwrap(), "task-abc");
        assert_ne!(v, r.seal("web", "task-abc", at(1_000)), "nonces differ");
    }

    #[test]
    fn edited_byte_wrong_key_other_service_and_truncation_fail() {
        let r = ring(&format!("k1 {K1}\n"));
        let v = r.seal("web", "task-abc", at(1_000));
        let mut edited = v.clone().into_bytes();
        let last = edited.len() - 3;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        assert_eq!(
            r.open("web", &edited, at(1_000), None),
            Err(OpenError::Forged)
        );
        assert_eq!(r.open("api", &v, at(1_000), None), Err(OpenError::Forged));
        let other = ring(&format!("k1 {K2}\n"));
        assert_eq!(
            other.open("web", &v, at(1_000), None),
            Err(OpenError::Forged)
        );
        assert!(r.open("web", &v[..v.len() - 10], at(1_000), None).is_err());
        assert!(r.open("web", &v[..v.len() - 11], at(1_000), None).is_err());
        assert_eq!(
            r.open("web", "k1.AAAA", at(1_000), None),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            r.open("web", "nodot", at(1_000), None),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            r.open("web", "k9.AAAA", at(1_000), None),
            Err(OpenError::UnknownKey)
        );
        assert_eq!(
            r.open("web", "k1.@@@@", at(1_000), None),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn expiry_and_clock_skew() {
        let r = ring(&format!("k1 {K1}\n"));
        let v = r.seal("web", "t", at(1_000));
        let ttl = Some(Duration::from_secs(60));
        assert!(r.open("web", &v, at(1_060), ttl).is_ok());
        assert_eq!(r.open("web", &v, at(1_061), ttl), Err(OpenError::Expired));
        assert_eq!(r.open("web", &v, at(500), None), Err(OpenError::Forged));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = ring(&format!("k1 {K1}\n"));
        let rotated = ring(&format!("k2 {K2}\nk1 {K1}\n"));
        let legacy = old.seal("web", "t", at(1_000));
        assert_eq!(rotated.open("web", &legacy, at(1_000), None).unwrap(), "t");
        let fresh = rotated.seal("web", "t", at(1_000));
        assert!(fresh.starts_with("k2."));
        assert_eq!(
            old.open("web", &fresh, at(1_000), None),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn bad_key_files_name_the_file_and_line() {
        let p = Path::new("/run/secrets/limpet_keys");
        let e = Keyring::parse(p, "k1 c2hvcnQ=\n").unwrap_err().to_string();
        assert!(
            e.contains("/run/secrets/limpet_keys") && e.contains("line 1") && e.contains("5 bytes"),
            "{e}"
        );
        let e = Keyring::parse(p, "# nothing\n").unwrap_err().to_string();
        assert!(e.contains("holds no key"), "{e}");
        let e = Keyring::parse(p, &format!("k1 {K1}\nk1 {K2}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Keyring::parse(p, "k1 !!!\n").unwrap_err().to_string();
        assert!(e.contains("base64"), "{e}");
        assert!(Keyring::load(Path::new("/nonexistent/keys"))
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/keys"));
    }

    #[test]
    fn non_utf8_identity_is_malformed() {
        let r = ring(&format!("k1 {K1}\n"));
        // Seal raw bytes by hand to reach the UTF-8 check.
        let key = &r.keys[0];
        let mut plain = 1_000u64.to_be_bytes().to_vec();
        plain.extend_from_slice(&[0xff, 0xfe]);
        let nonce = [7u8; NONCE_LEN];
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: b"web",
                },
            )
            .unwrap();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        let v = format!("k1.{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(
            r.open("web", &v, at(1_000), None),
            Err(OpenError::Malformed)
        );
    }
}
