//! Where the Consul agent is and how to reach it, read the way every Consul
//! tool reads it: the `CONSUL_HTTP_*` environment variables, with the config
//! file's `[consul]` keys on top (consul(1), "Environment Variables").
//!
//! Owns: the `CONSUL_HTTP_ADDR` forms (`host:port`, `http://`, `https://`,
//! `unix://`), reading the token file, the TLS file names, and expanding
//! `${hostname}` in `service_id`. The token is kept in [`Token`], which
//! never prints itself: not in logs, `status` or errors.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::ConsulConfig;
pub use crate::config::Endpoint;

/// The agent's address when neither the config nor `CONSUL_HTTP_ADDR` says.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// A Consul setting that cannot be used; `place` names where it came from
/// (`CONSUL_HTTP_ADDR`, `[consul] token_file`, a file name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct SettingsError {
    /// The variable, key or file.
    pub place: String,
    /// What is wrong with it.
    pub message: String,
}

impl SettingsError {
    pub(super) fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        SettingsError {
            place: place.into(),
            message: message.into(),
        }
    }
}

/// An ACL token. Sent as `X-Consul-Token`; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret, for the request header only.
    pub(super) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// TLS to the agent (`CONSUL_CACERT`, `CONSUL_CLIENT_CERT`/`_KEY`,
/// `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Trust only this CA bundle instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for `verify_incoming` agents.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the agent's certificate must carry, when it is not the
    /// address's host (`server.dc1.consul`).
    pub server_name: Option<String>,
    /// `false` accepts any certificate (`CONSUL_HTTP_SSL_VERIFY=false`).
    pub verify: bool,
}

/// Everything the Consul reporter needs, resolved once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent.
    pub endpoint: Endpoint,
    /// The ACL token, if any.
    pub token: Option<Token>,
    /// Where the token came from, for error hints (never the token).
    pub token_source: Option<String>,
    /// TLS options (used for `https` endpoints).
    pub tls: Tls,
    /// Registered service name.
    pub service: String,
    /// This node's instance ID, `${hostname}` expanded.
    pub service_id: String,
    /// The TTL check's TTL; refreshed every ttl/3.
    pub ttl: Duration,
    /// A planned stop waits for another instance to report master.
    pub confirm_peer: bool,
    /// Consul removes the instance after its check was critical this long.
    pub deregister_after: Option<Duration>,
    /// This node's name, for the registration's Meta.
    pub node: String,
    /// The floating addresses, comma-separated, for the Meta (the resolved
    /// config's, from the backend's section; empty when it names none).
    pub vip: String,
    /// Several masters are normal (BGP anycast): no split brain to watch.
    pub several_masters: bool,
}

impl Settings {
    /// Resolves `[consul]` over the environment (`env` looks a variable up).
    /// The config's keys win; the token file is read here.
    pub fn resolve(
        config: &ConsulConfig,
        env: impl Fn(&str) -> Option<String>,
        node: &str,
    ) -> Result<Settings, SettingsError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let https_default = match env("CONSUL_HTTP_SSL") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                SettingsError::new("CONSUL_HTTP_SSL", format!("`{v}` is not true or false"))
            })?,
            None => false,
        };
        let endpoint = match (&config.address, env("CONSUL_HTTP_ADDR")) {
            (Some(address), _) => Endpoint::parse(address, https_default)
                .map_err(|m| SettingsError::new("[consul] address", m))?,
            (None, Some(address)) => Endpoint::parse(&address, https_default)
                .map_err(|m| SettingsError::new("CONSUL_HTTP_ADDR", m))?,
            (None, None) => Endpoint::parse(DEFAULT_ADDRESS, https_default)
                .map_err(|m| SettingsError::new("default address", m))?,
        };
        // The file beats the variable, as in Consul's own api package.
        let (token, token_source) = match (
            &config.token_file,
            env("CONSUL_HTTP_TOKEN_FILE"),
            env("CONSUL_HTTP_TOKEN"),
        ) {
            (Some(file), _, _) => {
                let place = format!("[consul] token_file {}", file.display());
                (Some(read_token(file, &place)?), Some(place))
            }
            (None, Some(file), _) => {
                let place = format!("CONSUL_HTTP_TOKEN_FILE {file}");
                (Some(read_token(Path::new(&file), &place)?), Some(place))
            }
            (None, None, Some(token)) => (
                Some(Token(token.trim().to_owned())),
                Some("CONSUL_HTTP_TOKEN".to_owned()),
            ),
            (None, None, None) => (None, None),
        };
        let tls = Tls {
            ca_file: config
                .ca_file
                .clone()
                .or_else(|| env("CONSUL_CACERT").map(PathBuf::from)),
            client: client_pair(config, &env)?,
            server_name: config
                .tls_server_name
                .clone()
                .or_else(|| env("CONSUL_TLS_SERVER_NAME")),
            verify: match (config.ssl_verify, env("CONSUL_HTTP_SSL_VERIFY")) {
                (Some(verify), _) => verify,
                (None, Some(v)) => parse_bool(&v).ok_or_else(|| {
                    SettingsError::new(
                        "CONSUL_HTTP_SSL_VERIFY",
                        format!("`{v}` is not true or false"),
                    )
                })?,
                (None, None) => true,
            },
        };
        Ok(Settings {
            endpoint,
            token,
            token_source,
            tls,
            service: config.service.clone(),
            service_id: config.service_id.replace("${hostname}", node),
            ttl: config.ttl,
            confirm_peer: config.confirm_peer,
            deregister_after: config.deregister_critical_after,
            node: node.to_owned(),
            vip: config
                .vips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            several_masters: config.several_masters,
        })
    }

    /// The TTL check's ID: Consul's own default for a service's check.
    pub fn check_id(&self) -> String {
        format!("service:{}", self.service_id)
    }
}

/// The client certificate and key: both or neither.
fn client_pair(
    config: &ConsulConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(PathBuf, PathBuf)>, SettingsError> {
    let (cert, key, place) = if config.cert_file.is_some() || config.key_file.is_some() {
        (
            config.cert_file.clone(),
            config.key_file.clone(),
            "[consul] cert_file and key_file",
        )
    } else {
        (
            env("CONSUL_CLIENT_CERT").map(PathBuf::from),
            env("CONSUL_CLIENT_KEY").map(PathBuf::from),
            "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY",
        )
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(SettingsError::new(place, "set both or neither")),
    }
}

fn read_token(path: &Path, place: &str) -> Result<Token, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError::new(place, format!("cannot read the token: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SettingsError::new(place, "the token file is empty"));
    }
    Ok(Token(token.to_owned()))
}

/// Go's strconv.ParseBool, which Consul uses for its boolean variables.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn resolve(config: &ConsulConfig, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::resolve(config, |name| vars.get(name).cloned(), "edge1")
    }

    #[test]
    fn address_forms() {
        let tcp = |tls, a: &str| Endpoint::Tcp {
            tls,
            authority: a.into(),
        };
        let table = [
            ("127.0.0.1:8500", false, Ok(tcp(false, "127.0.0.1:8500"))),
            ("127.0.0.1:8501", true, Ok(tcp(true, "127.0.0.1:8501"))),
            (
                "http://localhost:8500/",
                false,
                Ok(tcp(false, "localhost:8500")),
            ),
            ("https://[::1]:8501", false, Ok(tcp(true, "[::1]:8501"))),
            (
                "unix:///run/consul.sock",
                false,
                Ok(Endpoint::Unix("/run/consul.sock".into())),
            ),
        ];
        for (text, ssl, want) in table {
            assert_eq!(Endpoint::parse(text, ssl), want, "{text}");
        }
        for bad in [
            "ftp://x:1",
            "unix://rel.sock",
            "http://",
            "http://a/b",
            "a b:1",
            "x:99999",
        ] {
            assert!(Endpoint::parse(bad, false).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_config_beats_the_environment_and_the_file_beats_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let env_file = file.to_str().unwrap();
        let s = resolve(
            &ConsulConfig::default(),
            &[
                ("CONSUL_HTTP_ADDR", "https://c:8501"),
                ("CONSUL_HTTP_TOKEN_FILE", env_file),
                ("CONSUL_HTTP_TOKEN", "from-var"),
                ("CONSUL_HTTP_SSL_VERIFY", "false"),
                ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "https://c:8501");
        assert_eq!(s.token.as_ref().unwrap().secret(), "from-file");
        assert!(!s.tls.verify);
        assert_eq!(s.tls.server_name.as_deref(), Some("server.dc1.consul"));
        assert_eq!(s.service_id, "edge-edge1");

        let config = ConsulConfig {
            address: Some("http://10.0.0.1:8500".into()),
            ssl_verify: Some(true),
            ..ConsulConfig::default()
        };
        let s = resolve(
            &config,
            &[
                ("CONSUL_HTTP_ADDR", "https://c:8501"),
                ("CONSUL_HTTP_TOKEN", " var "),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "http://10.0.0.1:8500");
        assert_eq!(s.token.as_ref().unwrap().secret(), "var");
        assert!(s.tls.verify);
    }

    #[test]
    fn errors_name_their_place_and_never_the_token() {
        let e = resolve(&ConsulConfig::default(), &[("CONSUL_HTTP_ADDR", "ftp://x")]).unwrap_err();
        assert_eq!(e.place, "CONSUL_HTTP_ADDR");
        let e = resolve(
            &ConsulConfig::default(),
            &[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token")],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CONSUL_HTTP_TOKEN_FILE /nonexistent/token: cannot read"),
            "{e}"
        );
        let e = resolve(
            &ConsulConfig::default(),
            &[("CONSUL_CLIENT_CERT", "/c.pem")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("both or neither"), "{e}");
        let s = resolve(&ConsulConfig::default(), &[("CONSUL_HTTP_TOKEN", "s3cret")]).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
