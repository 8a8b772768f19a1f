//! limpet's settings, typed and already validated. Built from the command line in `cli`;
//! everything else takes its part of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::discovery::docker::DockerSettings;
use crate::l4::L4Settings;
use crate::proxy::ProxySettings;
use crate::table::spec::CookieMode;
use crate::tls::certs::CertFiles;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub entrypoint: SocketAddr,
    /// Docker discovery, when enabled.
    pub docker: Option<DockerSettings>,
    /// The static file provider, when enabled.
    pub file: Option<FileSettings>,
    /// The status page's address, when enabled.
    pub web: Option<SocketAddr>,
    pub log: LogSettings,
    pub proxy: ProxySettings,
    /// Worker threads; `None` means one per available core.
    pub workers: Option<usize>,
    pub sticky: StickySettings,
    /// The TLS entrypoint, when enabled.
    pub tls: Option<TlsSettings>,
    /// The plain entrypoint also accepts HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// TCP and UDP front ports: where they are bound, how many UDP sessions each keeps.
    pub l4: L4Settings,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub address: SocketAddr,
    /// The first is the default certificate; the others are chosen by SNI.
    pub certificates: Vec<CertFiles>,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
}

/// Cookie settings that apply unless a service's labels say otherwise.
#[derive(Debug, Clone, Default)]
pub struct StickySettings {
    pub mode: CookieMode,
    pub ttl: Option<Duration>,
    /// The key file shared by all replicas, required by the `sealed` mode.
    pub keyfile: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct FileSettings {
    pub path: PathBuf,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    pub level: tracing::Level,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds as Traefik v1 accepts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad =
        || format!("`{text}`: expected a duration such as 500ms, 30s, 2m or a number of seconds");
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A comma-separated list of HTTP status codes, as labels write them (`500,502,503`).
pub fn parse_statuses(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(format!("`{t}` is not an HTTP status code (100-599)")),
        })
        .collect()
}

/// Named memory profiles, after the Azure IoT broker's: how many bytes may be in transit,
/// the largest request body, and how many client connections are served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryProfile {
    Tiny,
    Low,
    Medium,
    High,
}

impl MemoryProfile {
    /// (budget, max body, max connections).
    pub fn limits(self) -> (usize, u64, usize) {
        const MIB: usize = 1 << 20;
        match self {
            MemoryProfile::Tiny => (8 * MIB, 1 << 20, 1_024),
            MemoryProfile::Low => (32 * MIB, 8 << 20, 4_096),
            MemoryProfile::Medium => (128 * MIB, 64 << 20, 16_384),
            MemoryProfile::High => (512 * MIB, 1 << 30, 65_536),
        }
    }
}

impl std::str::FromStr for MemoryProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiny" => Ok(MemoryProfile::Tiny),
            "low" => Ok(MemoryProfile::Low),
            "medium" => Ok(MemoryProfile::Medium),
            "high" => Ok(MemoryProfile::High),
            _ => Err(format!("`{s}`: expected tiny, low, medium or high")),
        }
    }
}

/// `64KiB`, `128MiB`, `1GiB`, `1048576`; also `k`, `m`, `g` and `KB`-style suffixes, all
/// binary.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{text}`: expected a size such as 64KiB, 128MiB or 1GiB");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(bad)
}
