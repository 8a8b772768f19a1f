//! The few Docker API calls bollard cannot make for us.
//!
//! bollard's `Task` model follows Docker's published API spec, which omits a task's
//! `NetworksAttachments`, the only place Swarm reports a task's address on each overlay
//! network. So `/tasks` is read here with a plain HTTP/1 request over the same socket.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Where the Docker API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, from `tcp://host:port`.
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "`{0}` is not a Docker endpoint (expected unix:///path/to/docker.sock or tcp://host:port)"
    )]
    Unsupported(String),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(EndpointError::Unsupported(text.to_owned()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
        {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() || !addr.contains(':') {
                return Err(EndpointError::Unsupported(text.to_owned()));
            }
            return Ok(Endpoint::Tcp(addr.to_owned()));
        }
        Err(EndpointError::Unsupported(text.to_owned()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with Docker failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("Docker answered {status} to GET {path}: {body}")]
    Status {
        status: u16,
        path: String,
        body: String,
    },
    #[error("cannot decode Docker's answer to GET {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A Swarm task, with only the fields limpet reads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub desired_state: String,
    /// The replica number of a replicated service's task; global services have none.
    #[serde(default)]
    pub slot: Option<u64>,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default)]
    pub networks_attachments: Vec<NetworkAttachment>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    #[serde(default)]
    pub network: AttachedNetwork,
    /// CIDR form, `10.0.1.3/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub spec: AttachedNetworkSpec,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetworkSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ingress: bool,
}

/// Tasks Swarm wants running or is shutting down; the caller decides what their states mean.
pub async fn list_tasks(endpoint: &Endpoint) -> Result<Vec<Task>, ApiError> {
    let filters = r#"{"desired-state":["running","shutdown"]}"#;
    let path = format!("/tasks?filters={}", percent_encode(filters));
    get_json(endpoint, &path).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    endpoint: &Endpoint,
    path: &str,
) -> Result<T, ApiError> {
    let body = match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| ApiError::Connect {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
            exchange(stream, "docker", path).await?
        }
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ApiError::Connect {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
            exchange(stream, addr, path).await?
        }
    };
    serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
        path: path.to_owned(),
        source,
    })
}

async fn exchange<S>(stream: S, host: &str, path: &str) -> Result<Bytes, ApiError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .expect("static request parts are valid");
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(ApiError::Status {
            status: status.as_u16(),
            path: path.to_owned(),
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    Ok(body)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Swarm service labels and the facts the conversion needs, taken from bollard's model.
#[derive(Debug, Clone, Default)]
pub struct SwarmService {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Target ports the service's endpoint spec declares, used when no port label is set.
    pub target_ports: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375").unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(Endpoint::parse("/var/run/docker.sock").is_err());
        assert!(Endpoint::parse("tcp://host").is_err());
    }

    #[test]
    fn decodes_task_network_attachments() {
        let json = r#"[{"ID":"t1","ServiceID":"s1","DesiredState":"running",
            "Status":{"State":"running"},
            "NetworksAttachments":[
              {"Network":{"ID":"n0","Spec":{"Name":"ingress","Ingress":true}},"Addresses":["10.0.0.4/24"]},
              {"Network":{"ID":"n1","Spec":{"Name":"whoaminet"}},"Addresses":["10.0.1.3/24"]}]}]"#;
        let tasks: Vec<Task> = serde_json::from_str(json).unwrap();
        assert_eq!(tasks[0].networks_attachments.len(), 2);
        assert!(tasks[0].networks_attachments[0].network.spec.ingress);
        assert_eq!(tasks[0].networks_attachments[1].addresses, ["10.0.1.3/24"]);
    }

    #[test]
    fn filters_are_encoded() {
        assert_eq!(
            percent_encode(r#"{"a":["b"]}"#),
            "%7B%22a%22%3A%5B%22b%22%5D%7D"
        );
    }
}
