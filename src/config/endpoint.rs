//! The address of the Consul agent's HTTP API, in the forms
//! `CONSUL_HTTP_ADDR` takes (`host:port`, `http://`, `https://`,
//! `unix:///path`). A config value: `[consul] address` is checked with it at
//! `file:line:col`, and `crate::consul` connects to it.

use std::{fmt, path::PathBuf};

/// The agent's HTTP API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP, with or without TLS; `authority` is `host:port` as given.
    Tcp {
        /// `https`.
        tls: bool,
        /// `host:port` (or `host`, for the scheme's port).
        authority: String,
    },
    /// A Unix socket (`addresses { http = "unix://..." }` on the agent).
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses the forms `CONSUL_HTTP_ADDR` takes. `https_default` is
    /// `CONSUL_HTTP_SSL=true`, which makes a bare `host:port` use TLS.
    pub fn parse(text: &str, https_default: bool) -> Result<Endpoint, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{text}`: a unix:// address needs an absolute path (unix:///run/consul/http.sock)"
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = match text.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "`{text}`: scheme `{scheme}` is not http, https or unix"
                ));
            }
            None => (https_default, text),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "`{text}` is not an agent address; expected host:port, http://host:port, https://host:port or unix:///path"
            ));
        }
        let scheme = if tls { "https" } else { "http" };
        reqwest::Url::parse(&format!("{scheme}://{authority}/"))
            .map_err(|e| format!("`{text}` is not an agent address ({e})"))?;
        Ok(Endpoint::Tcp {
            tls,
            authority: authority.to_owned(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp {
                tls: true,
                authority,
            } => write!(f, "https://{authority}"),
            Endpoint::Tcp {
                tls: false,
                authority,
            } => write!(f, "http://{authority}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}
