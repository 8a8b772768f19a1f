//! Command-line flags, in Traefik v1's spelling where Traefik has one, so the tutorial's
//! command line (`--docker --docker.swarmmode --docker.watch --web --loglevel=DEBUG`) works
//! unchanged. Every flag can also come from an environment variable. Flags are parsed and
//! validated here and turned into [`Config`]; nothing past this module sees clap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::config::{
    parse_bytes, parse_duration, Config, FileSettings, LogFormat, LogSettings, MemoryProfile,
    StickySettings, TlsSettings,
};
use crate::discovery::docker::api::Endpoint;
use crate::discovery::docker::convert::Defaults;
use crate::discovery::docker::DockerSettings;
use crate::l4::L4Settings;
use crate::proxy::ProxySettings;
use crate::table::spec::CookieMode;
use crate::tls::certs::CertFiles;

#[derive(Debug, Parser)]
#[command(
    name = "limpet",
    version,
    about = "A Docker Swarm-aware reverse proxy that pins each client to one container with a sticky-session cookie.",
    long_about = None,
    after_help = "Boolean flags accept an optional value, Traefik-style: `--web`, `--web=true`, `--docker.watch=false`.\n\
                  Durations accept `500ms`, `30s`, `2m` or a number of seconds."
)]
pub struct Cli {
    /// Address the HTTP entrypoint listens on (`:80` means every interface).
    #[arg(long = "entrypoint", env = "LIMPET_ENTRYPOINT", default_value = ":80", value_parser = parse_addr, value_name = "ADDR")]
    entrypoint: SocketAddr,

    /// Discover services from Docker.
    #[arg(long = "docker", env = "LIMPET_DOCKER", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    docker: bool,

    /// Docker API endpoint: unix:///path/to/docker.sock or tcp://host:port.
    #[arg(long = "docker.endpoint", env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock", value_parser = parse_endpoint, value_name = "URL")]
    docker_endpoint: Endpoint,

    /// Read Swarm services and tasks instead of plain containers.
    #[arg(long = "docker.swarmmode", env = "LIMPET_DOCKER_SWARMMODE", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    docker_swarm_mode: bool,

    /// Follow Docker events between polls, so changes are routed within about 2 s.
    #[arg(long = "docker.watch", env = "LIMPET_DOCKER_WATCH", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "true", value_name = "BOOL")]
    docker_watch: bool,

    /// Seconds between full polls of Docker (the safety net behind events).
    #[arg(long = "docker.swarmmoderefreshseconds", visible_alias = "docker.refreshseconds", env = "LIMPET_DOCKER_REFRESHSECONDS", default_value = "15", value_parser = parse_duration, value_name = "DURATION")]
    docker_refresh: Duration,

    /// Route services that carry no `traefik.enable`/`limpet.enable` label.
    #[arg(long = "docker.exposedbydefault", env = "LIMPET_DOCKER_EXPOSEDBYDEFAULT", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "true", value_name = "BOOL")]
    docker_exposed_by_default: bool,

    /// Domain for services without a rule: they answer `Host:<service>.<domain>`.
    #[arg(
        long = "docker.domain",
        env = "LIMPET_DOCKER_DOMAIN",
        default_value = "",
        value_name = "DOMAIN"
    )]
    docker_domain: String,

    /// Enable the file provider (needs --file.filename); kept for Traefik command lines.
    #[arg(long = "file", env = "LIMPET_FILE", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    file: bool,

    /// TOML file of services and servers, re-read when it changes.
    #[arg(
        long = "file.filename",
        env = "LIMPET_FILE_FILENAME",
        value_name = "PATH"
    )]
    file_filename: Option<PathBuf>,

    /// How often the file is checked for changes.
    #[arg(long = "file.pollinterval", env = "LIMPET_FILE_POLLINTERVAL", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    file_poll_interval: Duration,

    /// Serve a status page and the routing table as JSON (on --web.address).
    #[arg(long = "web", visible_alias = "api", env = "LIMPET_WEB", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    web: bool,

    /// Address of the status page.
    #[arg(long = "web.address", env = "LIMPET_WEB_ADDRESS", default_value = ":8080", value_parser = parse_addr, value_name = "ADDR")]
    web_address: SocketAddr,

    /// Log level: DEBUG, INFO, WARN or ERROR (Traefik's FATAL and PANIC mean ERROR).
    #[arg(long = "loglevel", visible_alias = "log.level", env = "LIMPET_LOGLEVEL", default_value = "INFO", value_parser = parse_level, value_name = "LEVEL")]
    log_level: tracing::Level,

    /// Log format.
    #[arg(
        long = "log.format",
        env = "LIMPET_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: FormatArg,

    /// Time allowed to connect to a backend; then the next server is tried. Short, as
    /// HAProxy's usual `timeout connect`, because a vanished overlay address does not refuse:
    /// it stays silent until the timeout.
    #[arg(long = "forwardingtimeouts.dialtimeout", env = "LIMPET_DIALTIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    dial_timeout: Duration,

    /// Time allowed for a backend's response headers; 504 after it.
    #[arg(long = "forwardingtimeouts.responseheadertimeout", env = "LIMPET_RESPONSEHEADERTIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    response_header_timeout: Duration,

    /// Time an unused backend connection is kept for reuse.
    #[arg(long = "idletimeout", env = "LIMPET_IDLETIMEOUT", default_value = "90s", value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,

    /// Time a client gets to send a complete HTTP/1 request head, from connecting or from
    /// the head's first byte; the connection is closed after (slowloris). HAProxy's
    /// `timeout http-request`, Go's `ReadHeaderTimeout`. 0 switches it off.
    #[arg(long = "respondingtimeouts.readheadertimeout", env = "LIMPET_READHEADERTIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    read_header_timeout: Duration,

    /// Time a client connection may stay open with no request in flight (HTTP/1 keep-alive
    /// and HTTP/2 alike). Traefik's `respondingTimeouts.idleTimeout`, HAProxy's
    /// `timeout http-keep-alive`. 0 switches it off.
    #[arg(long = "respondingtimeouts.idletimeout", env = "LIMPET_CLIENT_IDLETIMEOUT", default_value = "180s", value_parser = parse_duration, value_name = "DURATION")]
    client_idle_timeout: Duration,

    /// Time in-flight requests get to finish on shutdown.
    #[arg(long = "lifecycle.gracetimeout", env = "LIMPET_GRACETIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    grace_timeout: Duration,

    /// What sticky cookies carry unless a service's `limpet.sticky.mode` says otherwise:
    /// `url` (the backend URL, as Traefik v1), `hash` (opaque, unkeyed) or `sealed`
    /// (encrypted with --sticky.keyfile).
    #[arg(long = "sticky.mode", env = "LIMPET_STICKY_MODE", default_value = "url", value_parser = parse_mode, value_name = "MODE")]
    sticky_mode: CookieMode,

    /// Key file for sealed cookies, shared by every replica (e.g. a Docker secret): lines of
    /// `<id> <base64 of 32 bytes>`, newest first.
    #[arg(
        long = "sticky.keyfile",
        env = "LIMPET_STICKY_KEYFILE",
        value_name = "PATH"
    )]
    sticky_keyfile: Option<PathBuf>,

    /// How long a sealed cookie stays valid (checked against wall-clock time); unlimited if unset.
    #[arg(long = "sticky.ttl", env = "LIMPET_STICKY_TTL", value_parser = parse_duration, value_name = "DURATION")]
    sticky_ttl: Option<Duration>,

    /// Address of the TLS entrypoint (e.g. `:443`); needs --tls.certificate.
    #[arg(long = "tls.address", env = "LIMPET_TLS_ADDRESS", value_parser = parse_addr, value_name = "ADDR")]
    tls_address: Option<SocketAddr>,

    /// A certificate and its key, as `CERT.pem,KEY.pem`; repeat for more (chosen by SNI, the
    /// first is the default). Reloaded when the files change.
    #[arg(long = "tls.certificate", env = "LIMPET_TLS_CERTIFICATES", value_delimiter = ';', value_parser = parse_cert_pair, value_name = "CERT,KEY")]
    tls_certificates: Vec<CertFiles>,

    /// Redirect plain-HTTP requests to the TLS entrypoint (308) instead of proxying them.
    #[arg(long = "entrypoint.redirect", env = "LIMPET_ENTRYPOINT_REDIRECT", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    redirect: bool,

    /// Accept HTTP/2 with prior knowledge (h2c) on the plain entrypoint.
    #[arg(long = "entrypoint.h2c", env = "LIMPET_ENTRYPOINT_H2C", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, default_value = "false", value_name = "BOOL")]
    h2c: bool,

    /// Memory profile: tiny (8 MiB in transit, 1 MiB bodies, 1,024 connections), low (32 MiB,
    /// 8 MiB, 4,096), medium (128 MiB, 64 MiB, 16,384) or high (512 MiB, 1 GiB, 65,536).
    #[arg(long = "memory.profile", env = "LIMPET_MEMORY_PROFILE", default_value = "medium", value_parser = parse_profile, value_name = "PROFILE")]
    memory_profile: MemoryProfile,

    /// Bytes in transit limpet may hold (overrides the profile); new requests get 503 once
    /// 75 % is in use. At least 256KiB.
    #[arg(long = "memory.budget", env = "LIMPET_MEMORY_BUDGET", value_parser = parse_size, value_name = "SIZE")]
    memory_budget: Option<u64>,

    /// Largest request body (overrides the profile); 413 beyond it.
    #[arg(long = "memory.maxbody", env = "LIMPET_MEMORY_MAXBODY", value_parser = parse_size, value_name = "SIZE")]
    max_body: Option<u64>,

    /// Client connections served at once (overrides the profile); more get a short 503.
    /// TCP connections to L4 front ports are bounded by the same number, counted apart.
    #[arg(long = "maxconnections", env = "LIMPET_MAXCONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=10_000_000), value_name = "N")]
    max_connections: Option<u32>,

    /// Address the TCP and UDP front ports of `limpet.tcp.*`, `limpet.udp.*` and
    /// `aliyun.lb.port_*` labels listen on (`::` for every IPv6 and IPv4 interface).
    #[arg(
        long = "l4.address",
        env = "LIMPET_L4_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    l4_address: IpAddr,

    /// UDP sessions (client addresses) per front port; when full, a session quiet for a
    /// second makes room, otherwise the new client is refused.
    #[arg(long = "l4.udp.maxsessions", env = "LIMPET_L4_UDP_MAXSESSIONS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    l4_udp_max_sessions: u32,

    /// Worker threads (default: the cores available).
    #[arg(long = "workers", env = "LIMPET_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    workers: Option<u16>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

impl Cli {
    /// Checks what single flags cannot: combinations.
    pub fn into_config(self) -> Result<Config, clap::Error> {
        use clap::CommandFactory;
        if self.file && self.file_filename.is_none() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--file needs --file.filename=<PATH>",
            ));
        }
        if !self.docker && self.file_filename.is_none() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "no provider: pass --docker (with --docker.swarmmode for Swarm) and/or --file.filename=<PATH>",
            ));
        }
        if self.sticky_mode == CookieMode::Sealed && self.sticky_keyfile.is_none() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--sticky.mode=sealed needs --sticky.keyfile=<PATH>",
            ));
        }
        if self.sticky_ttl.is_some_and(|t| t.is_zero()) {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ValueValidation,
                "--sticky.ttl must be greater than zero",
            ));
        }
        if self.tls_address.is_some() == self.tls_certificates.is_empty() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--tls.address and --tls.certificate go together",
            ));
        }
        if self.redirect && self.tls_address.is_none() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--entrypoint.redirect needs the TLS entrypoint (--tls.address)",
            ));
        }
        let (profile_budget, profile_body, profile_conns) = self.memory_profile.limits();
        let memory_budget = self.memory_budget.map_or(profile_budget, |b| b as usize);
        if memory_budget < MIN_BUDGET {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--memory.budget={memory_budget}: below one buffer per direction; the accepted range is 256KiB and up"
                ),
            ));
        }
        if self.max_body == Some(0) {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ValueValidation,
                "--memory.maxbody must be at least 1 byte",
            ));
        }
        if self.docker_refresh.is_zero() || self.file_poll_interval.is_zero() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ValueValidation,
                "--docker.swarmmoderefreshseconds and --file.pollinterval must be greater than zero",
            ));
        }
        Ok(Config {
            entrypoint: self.entrypoint,
            docker: self.docker.then_some(DockerSettings {
                endpoint: self.docker_endpoint,
                swarm_mode: self.docker_swarm_mode,
                watch: self.docker_watch,
                refresh: self.docker_refresh,
                defaults: Defaults {
                    exposed_by_default: self.docker_exposed_by_default,
                    domain: self.docker_domain,
                    reachable: None,
                },
            }),
            file: self.file_filename.map(|path| FileSettings {
                path,
                poll_interval: self.file_poll_interval,
            }),
            web: self.web.then_some(self.web_address),
            log: LogSettings {
                level: self.log_level,
                format: match self.log_format {
                    FormatArg::Text => LogFormat::Text,
                    FormatArg::Json => LogFormat::Json,
                },
            },
            proxy: ProxySettings {
                dial_timeout: self.dial_timeout,
                response_header_timeout: self.response_header_timeout,
                idle_conn_timeout: self.idle_timeout,
                grace_period: self.grace_timeout,
                client_header_timeout: Some(self.read_header_timeout).filter(|d| !d.is_zero()),
                client_idle_timeout: Some(self.client_idle_timeout).filter(|d| !d.is_zero()),
                memory_budget,
                max_body: Some(self.max_body.unwrap_or(profile_body)),
                max_connections: self.max_connections.map_or(profile_conns, |n| n as usize),
                redirect_to_https: self
                    .redirect
                    .then(|| self.tls_address.map(|a| a.port()))
                    .flatten(),
                ..ProxySettings::default()
            },
            workers: self.workers.map(usize::from),
            tls: self.tls_address.map(|address| TlsSettings {
                address,
                certificates: self.tls_certificates,
                reload_interval: Duration::from_secs(2),
            }),
            h2c: self.h2c,
            sticky: StickySettings {
                mode: self.sticky_mode,
                ttl: self.sticky_ttl,
                keyfile: self.sticky_keyfile,
            },
            l4: L4Settings {
                address: self.l4_address,
                udp_max_sessions: self.l4_udp_max_sessions as usize,
                max_tcp_connections: self.max_connections.map_or(profile_conns, |n| n as usize),
            },
        })
    }
}

/// `:80`, `0.0.0.0:80`, `127.0.0.1:8080`, `[::]:80`.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{text}`: expected :PORT or HOST:PORT"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    text.parse()
        .map_err(|_| format!("`{text}`: expected :PORT or IP:PORT"))
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    Endpoint::parse(text).map_err(|e| e.to_string())
}

/// Smaller than this, a single 64 KiB buffer each way would not fit.
const MIN_BUDGET: usize = 256 << 10;

fn parse_profile(text: &str) -> Result<MemoryProfile, String> {
    text.parse()
}

fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text)
}

fn parse_cert_pair(text: &str) -> Result<CertFiles, String> {
    let (cert, key) = text
        .split_once(',')
        .ok_or_else(|| format!("`{text}`: expected CERT.pem,KEY.pem"))?;
    if cert.trim().is_empty() || key.trim().is_empty() {
        return Err(format!("`{text}`: expected CERT.pem,KEY.pem"));
    }
    Ok(CertFiles {
        cert: PathBuf::from(cert.trim()),
        key: PathBuf::from(key.trim()),
    })
}

fn parse_mode(text: &str) -> Result<CookieMode, String> {
    text.parse()
}

fn parse_level(text: &str) -> Result<tracing::Level, String> {
    match text.to_ascii_uppercase().as_str() {
        "DEBUG" => Ok(tracing::Level::DEBUG),
        "INFO" => Ok(tracing::Level::INFO),
        "WARN" | "WARNING" => Ok(tracing::Level::WARN),
        "ERROR" | "FATAL" | "PANIC" => Ok(tracing::Level::ERROR),
        "TRACE" => Ok(tracing::Level::TRACE),
        _ => Err(format!("`{text}`: expected DEBUG, INFO, WARN or ERROR")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["limpet"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.into_config()
    }

    #[test]
    fn tutorial_command_line_works() {
        let c = parse(&[
            "--docker",
            "--docker.swarmmode",
            "--docker.watch",
            "--web",
            "--loglevel=DEBUG",
        ])
        .unwrap();
        let d = c.docker.unwrap();
        assert!(d.swarm_mode && d.watch);
        assert_eq!(c.web, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.entrypoint, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.log.level, tracing::Level::DEBUG);
        assert_eq!(d.refresh, Duration::from_secs(15));
        assert_eq!(c.l4.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.l4.udp_max_sessions, 1024);
    }

    #[test]
    fn l4_flags() {
        let c = parse(&["--docker", "--l4.address=::", "--l4.udp.maxsessions=10"]).unwrap();
        assert_eq!(c.l4.address, "::".parse::<IpAddr>().unwrap());
        assert_eq!(c.l4.udp_max_sessions, 10);
        let e = parse(&["--docker", "--l4.address=everywhere"]).unwrap_err();
        assert!(e.to_string().contains("everywhere"), "{e}");
        assert!(parse(&["--docker", "--l4.udp.maxsessions=0"]).is_err());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let e = parse(&["--docker", "--nonsense"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["--docker", "--entrypoint", "eighty"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("eighty"));
        let e = parse(&[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no provider"));
        let e = parse(&["--docker", "--workers", "0"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn booleans_take_optional_values() {
        let c = parse(&["--docker", "--docker.watch=false", "--web=false"]).unwrap();
        assert!(!c.docker.unwrap().watch);
        assert!(c.web.is_none());
    }

    #[test]
    fn memory_profiles_and_overrides() {
        let c = parse(&["--docker"]).unwrap();
        assert_eq!(c.proxy.memory_budget, 128 << 20);
        let c = parse(&[
            "--docker",
            "--memory.profile",
            "tiny",
            "--memory.maxbody",
            "2MiB",
        ])
        .unwrap();
        assert_eq!(c.proxy.memory_budget, 8 << 20);
        assert_eq!(c.proxy.max_body, Some(2 << 20));
        for bad in [
            vec!["--docker", "--memory.profile", "huge"],
            vec!["--docker", "--memory.budget", "64KiB"],
            vec!["--docker", "--memory.budget", "lots"],
            vec!["--docker", "--maxconnections", "0"],
        ] {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(
                e.to_string().contains(bad[1].trim_start_matches("--"))
                    || e.to_string().contains(bad[2]),
                "{e}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }
}
