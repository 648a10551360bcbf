//! Config value types that check themselves while being parsed, so that a bad
//! value is reported at its own `line:col` by the TOML parser.

use std::{collections::BTreeMap, fmt, net::SocketAddr};

use serde::{Deserialize, Deserializer, de};

/// A command line: program plus arguments, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

impl Argv {
    /// The program to run.
    pub fn program(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    /// The arguments after the program.
    pub fn args(&self) -> &[String] {
        self.0.get(1..).unwrap_or_default()
    }
}

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(deserializer)?;
        match argv.first() {
            None => Err(de::Error::custom(
                "empty command, expected [\"program\", \"arg\", ...]",
            )),
            Some(program) if program.is_empty() => Err(de::Error::custom(
                "empty program name, expected [\"program\", \"arg\", ...]",
            )),
            Some(_) => Ok(Argv(argv)),
        }
    }
}

/// `exit_code_map = { 143 = 0 }`: remaps the proxy's exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitCodeMap(pub BTreeMap<u8, u8>);

impl ExitCodeMap {
    /// `code`, remapped if the map names it.
    pub fn apply(&self, code: u8) -> u8 {
        self.0.get(&code).copied().unwrap_or(code)
    }
}

impl<'de> Deserialize<'de> for ExitCodeMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, i64>::deserialize(deserializer)?;
        let mut map = BTreeMap::new();
        for (key, value) in raw {
            let from = key.trim().parse::<u8>().map_err(|_| {
                de::Error::custom(format!(
                    "exit_code_map key `{key}` is not an exit status 0..255"
                ))
            })?;
            let to = u8::try_from(value).map_err(|_| {
                de::Error::custom(format!(
                    "exit_code_map value {value} for {key} is not 0..255"
                ))
            })?;
            map.insert(from, to);
        }
        Ok(ExitCodeMap(map))
    }
}

/// How much of the CARP group demote counter is ours (ifconfig(8): 1..128 per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoteBy(pub u8);

impl<'de> Deserialize<'de> for DemoteBy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u8::try_from(value) {
            Ok(v @ 1..=128) => Ok(DemoteBy(v)),
            _ => Err(de::Error::custom(format!(
                "demote_by {value} is out of range, expected 1..128 (the kernel's limit per carpdemote call)"
            ))),
        }
    }
}

/// `[failover.carp] interfaces`: at least one carp interface, none unnamed.
///
/// With no interface to watch the backend can never see this node as
/// MASTER, so every stop would take the node for one that does not hold the
/// IP and skip the wait for the move: refused here, at its `line:col`.
pub fn interfaces<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    if names.is_empty() {
        return Err(de::Error::custom(
            "interfaces is empty, expected the carp interfaces that hold the floating IP, such as [\"carp0\"]",
        ));
    }
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(de::Error::custom(
            "interfaces has an empty name, expected carp interface names such as [\"carp0\"]",
        ));
    }
    Ok(names)
}

/// `[consul] address`: one of the forms `CONSUL_HTTP_ADDR` takes, checked
/// here so that a bad one is refused at its place in the file (the scheme of
/// a bare `host:port` is settled later, with `CONSUL_HTTP_SSL`).
pub fn consul_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    super::Endpoint::parse(&text, false).map_err(de::Error::custom)?;
    Ok(Some(text))
}

/// `probe = "tcp://host:port"` or `"http://..."`: proof that the peer serves the VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect succeeds.
    Tcp(String),
    /// GET answers 2xx.
    Http(HttpUrl),
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Some(addr) = text.strip_prefix("tcp://") {
            check_host_port(addr).map_err(de::Error::custom)?;
            Ok(Probe::Tcp(addr.to_owned()))
        } else if text.starts_with("http://") || text.starts_with("https://") {
            text.parse().map(Probe::Http).map_err(de::Error::custom)
        } else {
            Err(de::Error::custom(format!(
                "probe `{text}` has no known scheme, expected tcp://host:port or http://host/path"
            )))
        }
    }
}

/// `host:port` for a TCP health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort(pub String);

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        check_host_port(&text).map_err(de::Error::custom)?;
        Ok(HostPort(text))
    }
}

fn check_host_port(text: &str) -> Result<(), String> {
    let port_ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if port_ok {
        Ok(())
    } else {
        Err(format!("`{text}` is not host:port"))
    }
}

/// An `http://host[:port][/path]` URL for a health check, parsed up front.
///
/// Plain HTTP only: the check talks to the proxy on this host, through the
/// health endpoint every supported proxy offers without TLS (traefik `/ping`,
/// nginx `stub_status`, haproxy `monitor-uri`, caddy's admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// As written.
    pub text: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, 80 by default.
    pub port: u16,
    /// Path and query, `/` by default.
    pub path: String,
}

impl std::str::FromStr for HttpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            if text.starts_with("https://") {
                format!("`{text}`: health checks speak plain HTTP to the local proxy; use its http:// health endpoint")
            } else {
                format!("`{text}` is not an http:// URL")
            }
        })?;
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("`{text}` has no usable host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{text}`: bad port `{p}`"))?,
        };
        Ok(HttpUrl {
            text: text.into(),
            host: host.into(),
            port,
            path: path.into(),
        })
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// `[http] listen`: an address, or `""` to disable the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(Listen(None));
        }
        text.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| de::Error::custom(format!("`{text}` is not ip:port (or \"\" to disable)")))
    }
}

/// `[log] level`: a tracing filter such as `info` or `handoff=debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // EnvFilter reads a bare word as a target name, so a typo such as
        // "infoo" would silently turn logging off: a bare word must be a level.
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        if !text.contains(['=', ',']) && !levels.contains(&text.to_ascii_lowercase().as_str()) {
            return Err(de::Error::custom(format!(
                "log level `{text}` is not a level, expected error, warn, info, debug or trace (or a directive like handoff=debug)"
            )));
        }
        tracing_subscriber::EnvFilter::try_new(&text).map_err(|e| {
            de::Error::custom(format!(
                "log level `{text}` is not valid ({e}), expected error, warn, info, debug or trace"
            ))
        })?;
        Ok(LogLevel(text))
    }
}

/// `#[serde(with = "duration")]`: humantime durations (`1.5s`, `250ms`, `2m`)
/// with an error that says why and what was expected.
///
/// Every duration has a ceiling (docs/handoff.toml.5, "Durations"). A value
/// far beyond any real wait is a typo (`"10000s"` for `"10s"`, a unit
/// forgotten), and a huge one such as `"100000years"` makes `Instant +
/// Duration` overflow and panic inside the running agent, where a panic
/// leaves the node's level to the dead-man's switch: refuse it here, at its
/// `line:col`, instead.
pub mod duration {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, de};

    const EXPECTED: &str = "a duration such as \"1.5s\", \"250ms\" or \"2m\"";

    /// The ceiling of every timeout, interval and wait: one day.
    pub const CEILING: Duration = Duration::from_secs(24 * 60 * 60);
    /// The ceiling of `[consul] deregister_critical_after`, which only
    /// Consul reads (never a timer of ours): 30 days.
    pub const DEREGISTER_CEILING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// The ceiling of `reload_timeout`: a reload still unconfirmed after ten
    /// minutes is stuck, and `handoff reload` must not wait for a day.
    pub const RELOAD_CEILING: Duration = Duration::from_secs(10 * 60);

    struct Visitor {
        ceiling: Duration,
    }

    impl de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            let value = humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "`{text}` is not a duration ({e}), expected {EXPECTED}"
                ))
            })?;
            within(text, value, self.ceiling).map_err(E::custom)
        }
    }

    /// `value` (written as `text`) if it is at most `ceiling`.
    pub fn within(text: &str, value: Duration, ceiling: Duration) -> Result<Duration, String> {
        if value > ceiling {
            return Err(format!(
                "`{text}` is longer than the ceiling of {}, expected at most that",
                humantime::format_duration(ceiling)
            ));
        }
        Ok(value)
    }

    /// Deserializes a duration string of at most [`CEILING`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(Visitor { ceiling: CEILING })
    }

    /// Deserializes `reload_timeout`: more than zero (a reload that may
    /// take no time always fails) and at most [`RELOAD_CEILING`].
    pub fn reload<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = deserializer.deserialize_str(Visitor {
            ceiling: RELOAD_CEILING,
        })?;
        if value.is_zero() {
            return Err(de::Error::custom(
                "a reload cannot take no time, expected more than 0",
            ));
        }
        Ok(value)
    }

    /// Deserializes a duration string of at most [`CEILING`] into `Some`
    /// (absent keys stay `None` through `#[serde(default)]`).
    pub fn optional<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer
            .deserialize_str(Visitor { ceiling: CEILING })
            .map(Some)
    }

    /// Deserializes a duration string of at most [`DEREGISTER_CEILING`] into
    /// `Some` (absent keys stay `None` through `#[serde(default)]`).
    pub fn deregister<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer
            .deserialize_str(Visitor {
                ceiling: DEREGISTER_CEILING,
            })
            .map(Some)
    }
}
