//! A small typed client for the Consul agent's HTTP API: the four calls
//! handoff makes, each with its own deadline, over reqwest with rustls.
//!
//! Owns: building the HTTP client from [`Settings`] (address, TLS, token),
//! the wire types of `/v1/agent/service/register`, `/v1/agent/check/update`,
//! `/v1/agent/service/deregister` and `/v1/health/service` (blocking queries,
//! `X-Consul-Index`), how much of an answer is read ([`MAX_HEALTH_BODY`],
//! [`MAX_ERROR_BODY`]), and turning failures into [`CallError`]s that name
//! the call and never carry the token. Does not retry: the callers decide.

use std::{collections::BTreeMap, fmt, net::ToSocketAddrs, time::Duration};

use reqwest::{
    Method, Url,
    header::{HeaderMap, HeaderValue},
};
use serde::{Deserialize, Serialize};

use super::settings::{Endpoint, Settings, SettingsError};

/// The most of a `/v1/health/service` answer that is read; a larger one is
/// an error ([`CallError::TooLarge`]). One instance of handoff's service is
/// about 2 KiB (the node, the service with its Meta, and two checks), and
/// up to about 9 KiB when both checks carry the most output a Consul agent
/// keeps (`check_output_max_size`, 4 KiB by default): 1 MiB holds more
/// than a hundred instances even then, where an edge service has a few.
/// Bounded at all because a blocking query is re-asked all the time, and
/// a broken or hostile agent must not make the reporter hold gigabytes.
pub const MAX_HEALTH_BODY: usize = 1024 * 1024;
/// The most of an error answer's body that is read: its start is shown
/// (200 characters) in the error; Consul's own error texts are one line.
pub const MAX_ERROR_BODY: usize = 4 * 1024;

/// The status of a TTL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Healthy; DNS answers with this instance.
    Passing,
    /// Up but not to be preferred (maintenance, draining).
    Warning,
    /// Down.
    Critical,
    /// Anything else Consul may say (`maintenance` for node maintenance).
    #[serde(other)]
    Other,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Other => "other",
        })
    }
}

/// `PUT /v1/agent/service/register`: the service with its one TTL check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    /// `service_id`.
    #[serde(rename = "ID")]
    pub id: String,
    /// `service`.
    pub name: String,
    /// `[role]`.
    pub tags: Vec<String>,
    /// `{role, node, vip, level, demoted, reason, version}`.
    pub meta: BTreeMap<String, String>,
    /// The TTL check.
    pub check: CheckDefinition,
}

/// The TTL check inside a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// `service:<service_id>`, Consul's own default for a service check.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Shown in the UI.
    pub name: String,
    /// Go duration text (`10000ms`).
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// The status it starts with (a TTL check otherwise starts critical).
    pub status: CheckStatus,
    /// The check's output.
    pub notes: String,
    /// Go duration text; Consul's minimum is 1m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
}

/// One instance of the service, as `/v1/health/service` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its service ID.
    pub id: String,
    /// The Consul node it is registered on.
    pub node: String,
    /// Its tags (handoff puts the role there).
    pub tags: Vec<String>,
    /// The worst status among its checks (the node's serfHealth included).
    pub status: CheckStatus,
}

impl Instance {
    /// Tagged master.
    pub fn is_master(&self) -> bool {
        self.tags.iter().any(|t| t == "master")
    }
}

/// A Consul call that did not succeed. Names the call; never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing came back in time (a hanging agent, a dead route).
    #[error("{call}: no answer within {}", humantime::format_duration(*limit))]
    Timeout {
        /// `PUT /v1/agent/service/register`, ...
        call: String,
        /// The deadline.
        limit: Duration,
    },
    /// The agent answered with an error status.
    #[error("{call}: {status} {body}{hint}")]
    Status {
        /// The call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// What to check, for ACL refusals.
        hint: String,
    },
    /// The answer is larger than handoff reads.
    #[error("{call}: the answer is more than {} MiB", limit / (1024 * 1024))]
    TooLarge {
        /// The call.
        call: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// Connecting or talking failed (refused, reset, TLS).
    #[error("{call}: {detail}")]
    Transport {
        /// The call.
        call: String,
        /// The cause chain.
        detail: String,
    },
}

impl CallError {
    /// The agent answered, with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The agent's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// Where the token came from, for the hint on 403 (never the token).
    token_source: Option<String>,
}

impl Client {
    /// Builds the client: TLS files are read here, so a bad one is an error
    /// at start, naming the file.
    pub fn new(settings: &Settings) -> Result<Client, SettingsError> {
        // reqwest is built with `rustls-no-provider`: ring is the provider
        // (it builds on OpenBSD; aws-lc needs cmake). A second install (tests,
        // a restart of the client) finds it in place, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        if let Some(token) = &settings.token {
            let mut value = HeaderValue::from_str(token.secret()).map_err(|_| {
                SettingsError::new(
                    settings.token_source.clone().unwrap_or_default(),
                    "the token has characters a header cannot carry",
                )
            })?;
            // Keeps it out of hyper's and reqwest's debug output.
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .connect_timeout(super::CALL_TIMEOUT)
            .pool_max_idle_per_host(2);
        let base = match &settings.endpoint {
            Endpoint::Unix(path) => {
                builder = builder.unix_socket(path.clone());
                "http://consul.sock/".to_owned()
            }
            Endpoint::Tcp { tls, authority } => {
                if *tls {
                    builder = tls_options(builder, settings)?;
                }
                match (&settings.tls.server_name, tls) {
                    // Connect to the address, but check the certificate (and
                    // send SNI) for the server name, as Consul's own
                    // TLSServerName does.
                    (Some(name), true) => {
                        let addrs: Vec<_> = authority_addrs(authority)
                            .map_err(|m| SettingsError::new("consul address", m))?;
                        builder = builder.resolve_to_addrs(name, &addrs);
                        let port = addrs.first().map_or(8501, std::net::SocketAddr::port);
                        format!("https://{name}:{port}/")
                    }
                    (_, true) => format!("https://{authority}/"),
                    (_, false) => format!("http://{authority}/"),
                }
            }
        };
        let base = Url::parse(&base)
            .map_err(|e| SettingsError::new("consul address", format!("`{base}`: {e}")))?;
        let http = builder
            .build()
            .map_err(|e| SettingsError::new("consul client", chain(&e)))?;
        Ok(Client {
            http,
            base,
            token_source: settings.token_source.clone(),
        })
    }

    /// Registers (or replaces) the service and its check.
    pub async fn register(&self, registration: &Registration) -> Result<(), CallError> {
        let url = self.url(&["v1", "agent", "service", "register"], &[]);
        self.send(Method::PUT, url, Some(registration), super::CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Sets the TTL check's status; any non-2xx means "register again".
    pub async fn update_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<(), CallError> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Update<'a> {
            status: CheckStatus,
            output: &'a str,
        }
        let url = self.url(&["v1", "agent", "check", "update", check_id], &[]);
        let body = Update { status, output };
        self.send(Method::PUT, url, Some(&body), super::CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Removes the service (and its check) from the agent.
    pub async fn deregister(&self, service_id: &str, limit: Duration) -> Result<(), CallError> {
        let url = self.url(&["v1", "agent", "service", "deregister", service_id], &[]);
        self.send::<()>(Method::PUT, url, None, limit)
            .await
            .map(drop)
    }

    /// The instances of `service` with their health. With `index`, a
    /// blocking query: Consul answers once something changed past `index`,
    /// or after `wait`. Returns the instances and the new index.
    pub async fn health(
        &self,
        service: &str,
        index: Option<u64>,
        wait: Duration,
        limit: Duration,
    ) -> Result<(Vec<Instance>, u64), CallError> {
        let index_text = index.map(|i| i.to_string());
        let wait_text = format!("{}ms", wait.as_millis());
        let mut query = Vec::new();
        if let Some(index) = &index_text {
            query.push(("index", index.as_str()));
            query.push(("wait", wait_text.as_str()));
        }
        let url = self.url(&["v1", "health", "service", service], &query);
        let call = format!("GET {}", url.path());
        let response = self.send::<()>(Method::GET, url, None, limit).await?;
        let new_index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // A length over the bound is refused before the body is read.
        if response
            .content_length()
            .is_some_and(|n| n > MAX_HEALTH_BODY as u64)
        {
            return Err(CallError::TooLarge {
                call,
                limit: MAX_HEALTH_BODY,
            });
        }
        let body = match read_at_most(response, MAX_HEALTH_BODY).await {
            Ok(Body::Whole(body)) => body,
            Ok(Body::Cut(_)) => {
                return Err(CallError::TooLarge {
                    call,
                    limit: MAX_HEALTH_BODY,
                });
            }
            Err(e) if e.is_timeout() => return Err(CallError::Timeout { call, limit }),
            Err(e) => {
                return Err(CallError::Transport {
                    call,
                    detail: chain(&e),
                });
            }
        };
        let instances = parse_health(&body).map_err(|e| CallError::Transport {
            call,
            detail: format!("unexpected answer: {e}"),
        })?;
        Ok((instances, new_index))
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        limit: Duration,
    ) -> Result<reqwest::Response, CallError> {
        let call = format!("{method} {}", url.path());
        let mut request = self.http.request(method, url).timeout(limit);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout {
                    call: call.clone(),
                    limit,
                }
            } else {
                CallError::Transport {
                    call: call.clone(),
                    detail: chain(&e),
                }
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // Only the start of the body is shown: read no more than that
        // needs, and none at all past the call's deadline.
        let body = match tokio::time::timeout(limit, read_at_most(response, MAX_ERROR_BODY)).await {
            Ok(Ok(Body::Whole(bytes) | Body::Cut(bytes))) => error_line(&bytes),
            Ok(Err(_)) | Err(_) => String::new(),
        };
        let hint = match (status.as_u16(), &self.token_source) {
            (403, Some(source)) => format!(
                " (the token from {source} is refused or lacks service:write and node:read)"
            ),
            (403, None) => " (ACLs are on: set [consul] token_file or CONSUL_HTTP_TOKEN)".into(),
            _ => String::new(),
        };
        Err(CallError::Status {
            call,
            status: status.as_u16(),
            body,
            hint,
        })
    }
}

/// A body read with a bound.
enum Body {
    /// All of it.
    Whole(Vec<u8>),
    /// Its first bytes, up to the bound; more followed, unread.
    Cut(Vec<u8>),
}

/// Reads `response`'s body, but no more than `limit` bytes: the rest is
/// never read (dropping the response closes the connection).
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Body> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Body::Cut(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Whole(body))
}

/// The TLS options of an https endpoint.
fn tls_options(
    mut builder: reqwest::ClientBuilder,
    settings: &Settings,
) -> Result<reqwest::ClientBuilder, SettingsError> {
    let tls = &settings.tls;
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| SettingsError::new(path.display().to_string(), e.to_string()))
    };
    if let Some(ca) = &tls.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(|e| {
            SettingsError::new(
                ca.display().to_string(),
                format!("not a PEM CA bundle: {}", chain(&e)),
            )
        })?;
        // CONSUL_CACERT replaces the system's roots, as in Consul's client.
        builder = builder.tls_certs_only(certs);
    }
    if let Some((cert, key)) = &tls.client {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            SettingsError::new(
                format!("{} and {}", cert.display(), key.display()),
                format!("not a PEM certificate and key: {}", chain(&e)),
            )
        })?;
        builder = builder.identity(identity);
    }
    if !tls.verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

/// The socket addresses of `host:port` (resolved once, at start).
fn authority_addrs(authority: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{authority}` resolves to no address"));
    }
    Ok(addrs)
}

/// An error and its causes on one line (reqwest's own Display stops at the
/// top: "error sending request").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The instances in a `/v1/health/service` answer (at most
/// 1 MiB (`MAX_HEALTH_BODY`), read by the caller), each with its worst check.
pub fn parse_health(body: &[u8]) -> Result<Vec<Instance>, serde_json::Error> {
    let entries: Vec<wire::Entry> = serde_json::from_slice(body)?;
    Ok(entries
        .into_iter()
        .map(wire::Entry::into_instance)
        .collect())
}

/// What an error answer's body is shown as: it goes into logs and `status`,
/// so one line of at most 200 characters, whatever the agent sent.
pub fn error_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The parts of `/v1/health/service` answers that handoff reads.
mod wire {
    use serde::Deserialize;

    use super::{CheckStatus, Instance};

    #[derive(Deserialize)]
    pub(super) struct Entry {
        #[serde(rename = "Node")]
        node: Node,
        #[serde(rename = "Service")]
        service: Service,
        #[serde(rename = "Checks", default)]
        checks: Vec<Check>,
    }

    #[derive(Deserialize)]
    struct Node {
        #[serde(rename = "Node")]
        name: String,
    }

    #[derive(Deserialize)]
    struct Service {
        #[serde(rename = "ID")]
        id: String,
        #[serde(rename = "Tags", default)]
        tags: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    struct Check {
        #[serde(rename = "Status")]
        status: CheckStatus,
    }

    impl Entry {
        pub(super) fn into_instance(self) -> Instance {
            let rank = |s: CheckStatus| match s {
                CheckStatus::Passing => 0,
                CheckStatus::Warning => 1,
                CheckStatus::Critical | CheckStatus::Other => 2,
            };
            let status = self
                .checks
                .iter()
                .map(|c| c.status)
                .max_by_key(|s| rank(*s))
                .unwrap_or(CheckStatus::Passing);
            Instance {
                id: self.service.id,
                node: self.node.name,
                tags: self.service.tags.unwrap_or_default(),
                status,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_health_answer_becomes_instances_with_their_worst_status() {
        let text = r#"[
          {"Node":{"Node":"n1","Address":"127.0.0.1"},
           "Service":{"ID":"edge-a","Service":"edge","Tags":["master"],"Meta":{}},
           "Checks":[{"CheckID":"serfHealth","Status":"passing"},{"CheckID":"service:edge-a","Status":"warning"}]},
          {"Node":{"Node":"n1"},"Service":{"ID":"edge-b","Tags":null},"Checks":[{"Status":"maintenance"}]}
        ]"#;
        let got = parse_health(text.as_bytes()).unwrap();
        assert_eq!(got[0].id, "edge-a");
        assert!(got[0].is_master());
        assert_eq!(got[0].status, CheckStatus::Warning);
        assert_eq!(got[1].tags, Vec::<String>::new());
        assert_eq!(got[1].status, CheckStatus::Other);
    }

    #[test]
    fn a_registration_is_what_consul_expects() {
        let registration = Registration {
            id: "edge-a".into(),
            name: "edge".into(),
            tags: vec!["master".into()],
            meta: BTreeMap::from([("role".into(), "master".into())]),
            check: CheckDefinition {
                check_id: "service:edge-a".into(),
                name: "handoff".into(),
                ttl: "10000ms".into(),
                status: CheckStatus::Passing,
                notes: String::new(),
                deregister_critical_service_after: None,
            },
        };
        let json = serde_json::to_value(&registration).unwrap();
        assert_eq!(json["ID"], "edge-a");
        assert_eq!(json["Check"]["CheckID"], "service:edge-a");
        assert_eq!(json["Check"]["TTL"], "10000ms");
        assert_eq!(json["Check"]["Status"], "passing");
        assert!(
            json["Check"]
                .get("DeregisterCriticalServiceAfter")
                .is_none()
        );
    }

    /// A one-shot HTTP server on loopback, for answers real Consul cannot be
    /// made to give: it reads one request, writes `head`, then `body` in
    /// `chunk`-byte writes, one every `every`, and returns how many body
    /// bytes it got out before the client went away (or all of them).
    async fn answer_once(
        head: &str,
        body: Vec<u8>,
        chunk: usize,
        every: Duration,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let head = head.to_owned();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&buf[..n]);
            }
            if stream.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let mut sent = 0;
            for part in body.chunks(chunk) {
                if stream.write_all(part).await.is_err() {
                    break;
                }
                sent += part.len();
                tokio::time::sleep(every).await;
            }
            sent
        });
        (addr, server)
    }

    fn client_for(addr: std::net::SocketAddr) -> Client {
        let consul = crate::config::ConsulConfig {
            address: Some(addr.to_string()),
            ..crate::config::ConsulConfig::default()
        };
        let settings = Settings::resolve(&consul, |_| None, "node").unwrap();
        Client::new(&settings).unwrap()
    }

    /// A valid `/v1/health/service` answer of about `size` bytes.
    fn health_answer(size: usize) -> Vec<u8> {
        let entry = r#"{"Node":{"Node":"n1"},"Service":{"ID":"edge-x","Tags":["backup"]},"Checks":[{"Status":"passing"}]}"#;
        let count = size / (entry.len() + 1) + 1;
        format!("[{}]", vec![entry; count].join(",")).into_bytes()
    }

    #[tokio::test]
    async fn a_health_answer_over_its_bound_is_refused_without_reading_it_all() {
        let body = health_answer(16 * MAX_HEALTH_BODY);
        let total = body.len();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        let (addr, server) = answer_once(head, body, 64 * 1024, Duration::from_millis(1)).await;
        let got = client_for(addr)
            .health("edge", None, Duration::ZERO, Duration::from_secs(10))
            .await;
        let error = match got {
            Err(error) => error,
            Ok((instances, _)) => panic!("read {} instances", instances.len()),
        };
        assert!(
            matches!(
                error,
                CallError::TooLarge {
                    limit: MAX_HEALTH_BODY,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("more than 1 MiB"), "{error}");
        let sent = server.await.unwrap();
        assert!(sent < total, "read it all: {sent} of {total} bytes");

        // A large answer within the bound is read.
        let body = health_answer(MAX_HEALTH_BODY - 4096);
        assert!(body.len() <= MAX_HEALTH_BODY);
        let (addr, _server) = answer_once(head, body, 64 * 1024, Duration::ZERO).await;
        let (instances, _) = client_for(addr)
            .health("edge", None, Duration::ZERO, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(instances.len() > 5000, "{}", instances.len());
    }

    #[tokio::test]
    async fn a_declared_length_over_the_bound_is_refused_before_the_body() {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            MAX_HEALTH_BODY + 1
        );
        // The body never comes: only the header can end the call early.
        let (addr, _server) = answer_once(&head, vec![b' '; 1], 1, Duration::from_secs(30)).await;
        let started = std::time::Instant::now();
        let error = client_for(addr)
            .health("edge", None, Duration::ZERO, Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert!(matches!(error, CallError::TooLarge { .. }), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_error_body_is_read_only_as_far_as_its_bound() {
        // An endless error page, trickled: only its first bytes are read.
        let head = "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n";
        let body = vec![b'e'; 4000 * 1024];
        let (addr, server) = answer_once(head, body, 1024, Duration::from_millis(1)).await;
        let started = std::time::Instant::now();
        let error = client_for(addr)
            .deregister("edge-x", Duration::from_secs(2))
            .await
            .expect_err("500");
        let elapsed = started.elapsed();
        let CallError::Status { status, body, .. } = &error else {
            panic!("a status error expected: {error}")
        };
        assert_eq!(*status, 500);
        assert_eq!(body.len(), 200, "the start of the body: {body:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        let sent = server.await.unwrap();
        assert!(sent < 4000 * 1024, "read it all");
    }
}
