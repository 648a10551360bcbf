//! What a child's environment loses: the one place that decides it, for
//! every child handoff starts (the proxy, exec health checks, backend
//! commands and CARP's ifconfig, the sentinel, and the tools `check` runs).
//!
//! Owns: the variables meant for handoff alone (its supervisor's
//! `NOTIFY_SOCKET`, and the Consul credentials it reads for `[consul]`),
//! `[proxy] keep_env`'s exceptions, and naming what is stripped (names,
//! never values) for the start log and `handoff check`. Does not own:
//! spawning (`crate::process::Children::spawn` applies it to each child).
//!
//! The sentinel is a child like the others: it is handoff itself, but it
//! only applies `down` through the backend and never talks to Consul
//! (`crate::sentinel`), so it needs none of the credentials; the backend
//! commands it runs get what `keep_env` keeps, as the agent's do.

use std::{ffi::OsStr, process::Command};

/// Variables handoff's own supervisor meant for handoff, never for the proxy:
/// a proxy that inherits `NOTIFY_SOCKET` can tell systemd READY or STOPPING
/// in handoff's name (Nomad's agent under systemd leaks them to raw_exec
/// tasks). Always removed; `keep_env` cannot keep them.
pub const SUPERVISOR_ONLY: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"];

/// The `CONSUL_*` variables that carry a credential for the Consul agent or
/// name a file holding one (consul(1), "Environment Variables"; Consul's
/// api package reads the same ones): the ACL token, the file it is read
/// from, HTTP basic auth's `user:password`, and the client certificate and
/// key that an agent with `verify_incoming` takes as identity (the
/// certificate alone grants nothing, but it goes with its key).
///
/// Not stripped: the other `CONSUL_*` variables, which grant nothing and
/// which a proxy's own Consul provider (traefik's Consul catalog) reads to
/// find the agent: `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`,
/// `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`, `CONSUL_CAPATH`,
/// `CONSUL_TLS_SERVER_NAME`, `CONSUL_GRPC_ADDR`, `CONSUL_NAMESPACE`.
pub const CONSUL_CREDENTIALS: [&str; 5] = [
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_AUTH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
];

/// Which credentials a child keeps; every other one, and every
/// [`SUPERVISOR_ONLY`] variable, is removed. The default keeps none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    kept: Vec<&'static str>,
}

impl ChildEnv {
    /// Strips every credential except those `keep` names (`[proxy]
    /// keep_env`, whose names the config checked against
    /// [`CONSUL_CREDENTIALS`]; any other name keeps nothing).
    pub fn new(keep: &[String]) -> ChildEnv {
        ChildEnv {
            kept: CONSUL_CREDENTIALS
                .into_iter()
                .filter(|name| keep.iter().any(|k| k == name))
                .collect(),
        }
    }

    /// The variables a child loses.
    pub fn removed(&self) -> impl Iterator<Item = &'static str> + '_ {
        SUPERVISOR_ONLY.into_iter().chain(
            CONSUL_CREDENTIALS
                .into_iter()
                .filter(|name| !self.kept.contains(name)),
        )
    }

    /// Removes them from `command`'s environment.
    pub fn apply(&self, command: &mut Command) {
        for name in self.removed() {
            command.env_remove(name);
        }
    }

    /// Of the credentials set in handoff's own environment (`is_set` looks a
    /// name up), those stripped and those kept: names only.
    pub fn credentials(&self, is_set: impl Fn(&str) -> bool) -> Credentials {
        let (kept, stripped) = CONSUL_CREDENTIALS
            .into_iter()
            .filter(|name| is_set(name))
            .partition(|name| self.kept.contains(name));
        Credentials { stripped, kept }
    }

    /// [`ChildEnv::credentials`] of this process's environment.
    pub fn credentials_here(&self) -> Credentials {
        self.credentials(|name| std::env::var_os(OsStr::new(name)).is_some())
    }
}

/// The credentials in handoff's environment, by what children get of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Removed from every child's environment.
    pub stripped: Vec<&'static str>,
    /// Passed on, as `[proxy] keep_env` asks.
    pub kept: Vec<&'static str>,
}

impl Credentials {
    /// Whether there is anything to say.
    pub fn is_empty(&self) -> bool {
        self.stripped.is_empty() && self.kept.is_empty()
    }

    /// One line for `handoff check`.
    pub fn line(&self) -> String {
        let list = |names: &[&str]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let mut line = format!(
            "Consul credentials stripped from the children's environment: {}",
            list(&self.stripped)
        );
        if !self.kept.is_empty() {
            line.push_str("; kept by [proxy] keep_env: ");
            line.push_str(&list(&self.kept));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_unless_kept_and_supervisor_variables_always() {
        let all = ChildEnv::default();
        let removed: Vec<_> = all.removed().collect();
        for name in SUPERVISOR_ONLY.iter().chain(&CONSUL_CREDENTIALS) {
            assert!(removed.contains(name), "{name}");
        }
        let keep = ChildEnv::new(&["CONSUL_HTTP_TOKEN".into(), "NOTIFY_SOCKET".into()]);
        let removed: Vec<_> = keep.removed().collect();
        assert!(!removed.contains(&"CONSUL_HTTP_TOKEN"));
        assert!(removed.contains(&"NOTIFY_SOCKET"), "never kept");
        assert!(removed.contains(&"CONSUL_HTTP_AUTH"));
    }

    #[test]
    fn only_credentials_that_are_set_are_named() {
        let keep = ChildEnv::new(&["CONSUL_HTTP_TOKEN".into(), "CONSUL_CLIENT_KEY".into()]);
        let set = ["CONSUL_HTTP_TOKEN", "CONSUL_HTTP_AUTH", "CONSUL_HTTP_ADDR"];
        let found = keep.credentials(|name| set.contains(&name));
        assert_eq!(found.stripped, ["CONSUL_HTTP_AUTH"]);
        assert_eq!(found.kept, ["CONSUL_HTTP_TOKEN"]);
        assert_eq!(
            found.line(),
            "Consul credentials stripped from the children's environment: CONSUL_HTTP_AUTH; kept by [proxy] keep_env: CONSUL_HTTP_TOKEN"
        );
        assert!(keep.credentials(|_| false).is_empty());
    }
}
