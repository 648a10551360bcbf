//! `[proxy] reload_*`: how a reload reaches the proxy, the check run before
//! it, and what confirms it, with each preset's defaults derived from the
//! proxy's own command line (so the check reads the same file the proxy
//! runs with).
//!
//! Owns: the keys' types, and [`ReloadConfig::plan`], which applies the
//! preset once the command line is known (the one after `--` wins over
//! `[proxy] command`, so this cannot happen while the file is resolved).
//! What each preset's check and confirmation are rests on
//! docs/proxies-measured.md: `nginx -t` must get the proxy's own `-c`,
//! `-p` and `-g` (a `daemon off;` given twice is an error), caddy picks its
//! Caddyfile adapter by file name unless `--adapter` says, haproxy 2.6 says
//! READY=1 after a failed reload too (so its new worker is what tells
//! success), and `caddy reload` is synchronous.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use super::{Argv, Preset, Reload};
use crate::platform;

/// One thing that confirms a reload (`reload_confirm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirm {
    /// READY=1 on handoff's private NOTIFY_SOCKET, after the send.
    Ready,
    /// A child of the proxy's main pid that was not there before the send.
    Workers,
    /// Every child of the proxy's main pid from before the send has exited
    /// or calls itself "shutting down" in its process title: nginx starts
    /// its new workers 100 ms before it tells the old ones to stop
    /// accepting (`ngx_msleep(100)` in ngx_process_cycle.c), and retitles
    /// each one it told (`nginx: worker process is shutting down`).
    Retired,
    /// One pass of the `[proxy.health]` check, after the others.
    Health,
}

impl Confirm {
    /// The name in the config and in `handoff reload`'s answer.
    pub fn name(self) -> &'static str {
        match self {
            Confirm::Ready => "ready",
            Confirm::Workers => "workers",
            Confirm::Retired => "retired",
            Confirm::Health => "health",
        }
    }
}

/// What must be seen before a reload counts as done; none of them means
/// "once it was sent".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // a set of independent kinds, as `reload_confirm` lists them
pub struct Confirmations {
    /// [`Confirm::Ready`]
    pub ready: bool,
    /// [`Confirm::Workers`]
    pub workers: bool,
    /// [`Confirm::Retired`]
    pub retired: bool,
    /// [`Confirm::Health`]
    pub health: bool,
}

impl Confirmations {
    /// The set of `list`.
    pub fn of(list: &[Confirm]) -> Confirmations {
        Confirmations {
            ready: list.contains(&Confirm::Ready),
            workers: list.contains(&Confirm::Workers),
            retired: list.contains(&Confirm::Retired),
            health: list.contains(&Confirm::Health),
        }
    }

    /// The members, in the order they are checked.
    pub fn list(self) -> Vec<Confirm> {
        [
            (self.ready, Confirm::Ready),
            (self.workers, Confirm::Workers),
            (self.retired, Confirm::Retired),
            (self.health, Confirm::Health),
        ]
        .into_iter()
        .filter_map(|(on, which)| on.then_some(which))
        .collect()
    }
}

/// How the reload reaches the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadSend {
    /// This signal to the proxy.
    Signal(Signal),
    /// This command runs (caddy's `caddy reload`); exit 0 means it was taken.
    Command(Argv),
    /// Reloads are refused (SIGHUP is dropped).
    Disabled,
}

/// A reload, ready to run for one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// How it is sent.
    pub send: ReloadSend,
    /// Run first; a failure sends nothing.
    pub check: Option<Argv>,
    /// What confirms it.
    pub confirm: Confirmations,
    /// Check, send and confirmation together.
    pub timeout: Duration,
}

/// `[proxy] reload_*` as the file gave them, with the preset.
#[derive(Debug, Clone)]
pub struct ReloadConfig {
    /// The preset whose defaults fill in what the file leaves out.
    pub preset: Preset,
    /// `reload_signal`
    pub signal: Option<Reload>,
    /// `reload_command`
    pub command: Option<Argv>,
    /// `reload_check`; `Some([])` turns the preset's off.
    pub check: Option<Vec<String>>,
    /// `reload_confirm`
    pub confirm: Option<Vec<Confirm>>,
    /// `reload_timeout`
    pub timeout: Duration,
    /// Whether `[proxy.health]` has a check (the preset's "health" needs one).
    pub health: bool,
}

impl ReloadConfig {
    /// The reload for the proxy started as `argv`.
    pub fn plan(&self, argv: &Argv) -> ReloadPlan {
        let send = match (&self.command, self.signal) {
            (Some(command), _) => ReloadSend::Command(command.clone()),
            (None, Some(Reload::Send(signal))) => ReloadSend::Signal(signal),
            (None, Some(Reload::Drop)) => ReloadSend::Disabled,
            (None, None) => self.preset_send(argv),
        };
        let check = match &self.check {
            Some(argv) if argv.is_empty() => None,
            Some(argv) => Some(Argv(argv.clone())),
            None => preset_check(self.preset, argv),
        };
        let confirm = match &self.confirm {
            Some(list) => Confirmations::of(list),
            None => preset_confirm(self.preset, argv, &send, self.health),
        };
        ReloadPlan {
            send,
            check,
            confirm,
            timeout: self.timeout,
        }
    }

    fn preset_send(&self, argv: &Argv) -> ReloadSend {
        match self.preset.reload() {
            Reload::Send(signal) => ReloadSend::Signal(signal),
            Reload::Drop if self.preset == Preset::Caddy => {
                caddy_reload(argv).map_or(ReloadSend::Disabled, ReloadSend::Command)
            }
            Reload::Drop => ReloadSend::Disabled,
        }
    }
}

/// The preset's confirmations; "health" only with a health check
/// (`health`). A disabled reload confirms nothing, and the generic preset
/// knows nothing of its proxy: done once sent.
fn preset_confirm(preset: Preset, argv: &Argv, send: &ReloadSend, health: bool) -> Confirmations {
    // haproxy's old worker stops accepting once the new one, started with
    // `-sf <old>`, has bound (haproxy management guide, "Stopping and
    // restarting"), so its new worker is enough; nginx's old workers keep
    // accepting for 100 ms after the new ones start.
    // READY=1 only where the proxy sends it: on Linux, haproxy under -Ws
    // only (-W alone is master-worker without sd_notify; haproxy(1)).
    let notifies = platform::PROXIES_NOTIFY;
    let (ready, workers, retired) = match preset {
        _ if *send == ReloadSend::Disabled => return Confirmations::default(),
        Preset::Nginx => (false, true, true),
        Preset::Haproxy => (
            notifies && argv.args().iter().any(|a| a == "-Ws"),
            true,
            false,
        ),
        Preset::Caddy => (notifies, false, false),
        Preset::Traefik | Preset::Generic => return Confirmations::default(),
    };
    Confirmations {
        ready,
        workers,
        retired,
        health,
    }
}

/// The preset's check for the proxy started as `argv`, if it has one.
fn preset_check(preset: Preset, argv: &Argv) -> Option<Argv> {
    let program = argv.program().to_owned();
    match preset {
        // nginx(8): -t tests the file the other options name.
        Preset::Nginx => {
            let mut check = vec![program, "-t".to_owned()];
            check.extend(options(argv, &["-c", "-p", "-g", "-e"]));
            Some(Argv(check))
        }
        // haproxy(1): -c checks the files of every -f (and -C's directory).
        Preset::Haproxy => {
            let files = options(argv, &["-f", "-C"]);
            (!files.is_empty()).then(|| {
                let mut check = vec![program, "-c".to_owned()];
                check.extend(files);
                Argv(check)
            })
        }
        Preset::Caddy => {
            let (config, adapter) = caddy_config(argv)?;
            let mut check = vec![program, "validate".into(), "--config".into(), config];
            check.extend(
                adapter
                    .map(|a| ["--adapter".to_owned(), a])
                    .into_iter()
                    .flatten(),
            );
            Some(Argv(check))
        }
        Preset::Traefik | Preset::Generic => None,
    }
}

/// `caddy reload --config F [--adapter A] --force` for `caddy run --config
/// F [--adapter A]`: it reads the admin address from the same file
/// (`caddy help reload`), and without `--force` ignores an unchanged file.
fn caddy_reload(argv: &Argv) -> Option<Argv> {
    let (config, adapter) = caddy_config(argv)?;
    let mut reload = vec![
        argv.program().to_owned(),
        "reload".into(),
        "--config".into(),
        config,
    ];
    reload.extend(
        adapter
            .map(|a| ["--adapter".to_owned(), a])
            .into_iter()
            .flatten(),
    );
    reload.push("--force".into());
    Some(Argv(reload))
}

/// caddy's `--config` and `--adapter` values (Go's flag package takes
/// `-config` as well).
fn caddy_config(argv: &Argv) -> Option<(String, Option<String>)> {
    let config = value_of(argv, "--config").or_else(|| value_of(argv, "-config"))?;
    let adapter = value_of(argv, "--adapter").or_else(|| value_of(argv, "-adapter"));
    Some((config, adapter))
}

/// The value of `name` (`--name V` or `--name=V`), the last one winning as
/// in Go's flag package.
fn value_of(argv: &Argv, name: &str) -> Option<String> {
    let words = argv.args();
    let mut found = None;
    for (i, arg) in words.iter().enumerate() {
        if arg == name {
            found = words.get(i + 1).cloned().or(found);
        } else if let Some(value) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_owned());
        }
    }
    found
}

/// Every `name value` pair of `argv` whose name is in `names` (or
/// `namevalue`, as nginx and haproxy also take), in order, as two words.
fn options(argv: &Argv, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = argv.args().iter();
    while let Some(arg) = words.next() {
        if let Some(name) = names.iter().find(|n| arg == *n) {
            if let Some(value) = words.next() {
                out.extend([(*name).to_owned(), value.clone()]);
            }
        } else if let Some(name) = names
            .iter()
            .find(|n| arg.starts_with(**n) && arg.len() > n.len())
        {
            out.extend([(*name).to_owned(), arg[name.len()..].to_owned()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Argv {
        Argv(words.iter().map(|w| (*w).to_owned()).collect())
    }

    fn config(preset: Preset) -> ReloadConfig {
        ReloadConfig {
            preset,
            signal: None,
            command: None,
            check: None,
            confirm: None,
            timeout: Duration::from_secs(15),
            health: true,
        }
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table, one row per preset and command line
    fn each_preset_checks_and_confirms_with_the_proxys_own_arguments() {
        type Case<'a> = (
            Preset,
            &'a [&'a str],
            ReloadSend,
            Option<&'a [&'a str]>,
            &'a [Confirm],
        );
        let cases: &[Case] = &[
            (
                Preset::Nginx,
                &[
                    "/usr/sbin/nginx",
                    "-c",
                    "/e/n.conf",
                    "-p",
                    "/p/",
                    "-g",
                    "daemon off;",
                ],
                ReloadSend::Signal(Signal::SIGHUP),
                Some(&[
                    "/usr/sbin/nginx",
                    "-t",
                    "-c",
                    "/e/n.conf",
                    "-p",
                    "/p/",
                    "-g",
                    "daemon off;",
                ]),
                &[Confirm::Workers, Confirm::Retired, Confirm::Health],
            ),
            (
                Preset::Nginx,
                &["nginx", "-c/e/n.conf"],
                ReloadSend::Signal(Signal::SIGHUP),
                Some(&["nginx", "-t", "-c", "/e/n.conf"]),
                &[Confirm::Workers, Confirm::Retired, Confirm::Health],
            ),
            (
                Preset::Haproxy,
                &[
                    "haproxy", "-Ws", "-f", "/a.cfg", "-f", "/conf.d", "-S", "/m.sock",
                ],
                ReloadSend::Signal(Signal::SIGUSR2),
                Some(&["haproxy", "-c", "-f", "/a.cfg", "-f", "/conf.d"]),
                &[Confirm::Ready, Confirm::Workers, Confirm::Health],
            ),
            (
                Preset::Caddy,
                &[
                    "caddy",
                    "run",
                    "--config",
                    "/e/Caddyfile",
                    "--adapter",
                    "caddyfile",
                ],
                ReloadSend::Command(argv(&[
                    "caddy",
                    "reload",
                    "--config",
                    "/e/Caddyfile",
                    "--adapter",
                    "caddyfile",
                    "--force",
                ])),
                Some(&[
                    "caddy",
                    "validate",
                    "--config",
                    "/e/Caddyfile",
                    "--adapter",
                    "caddyfile",
                ]),
                &[Confirm::Ready, Confirm::Health],
            ),
            (
                Preset::Caddy,
                &["caddy", "run", "--config=/e/c.json"],
                ReloadSend::Command(argv(&[
                    "caddy",
                    "reload",
                    "--config",
                    "/e/c.json",
                    "--force",
                ])),
                Some(&["caddy", "validate", "--config", "/e/c.json"]),
                &[Confirm::Ready, Confirm::Health],
            ),
            // Without --config there is no file to reload from.
            (
                Preset::Caddy,
                &["caddy", "run"],
                ReloadSend::Disabled,
                None,
                &[],
            ),
            (
                Preset::Traefik,
                &["traefik"],
                ReloadSend::Disabled,
                None,
                &[],
            ),
            (
                Preset::Generic,
                &["proxy"],
                ReloadSend::Signal(Signal::SIGHUP),
                None,
                &[],
            ),
        ];
        for (preset, command, send, check, confirm) in cases {
            let plan = config(*preset).plan(&argv(command));
            assert_eq!(plan.send, *send, "{preset:?} {command:?}");
            assert_eq!(plan.check, check.map(argv), "{preset:?} {command:?}");
            // Where proxies send no READY=1 (OpenBSD), no preset waits for one.
            let confirm: Vec<Confirm> = confirm
                .iter()
                .copied()
                .filter(|c| *c != Confirm::Ready || platform::PROXIES_NOTIFY)
                .collect();
            assert_eq!(plan.confirm.list(), confirm, "{preset:?} {command:?}");
        }
        let w = config(Preset::Haproxy).plan(&argv(&["haproxy", "-W", "-f", "/a.cfg"]));
        assert_eq!(
            w.confirm.list(),
            [Confirm::Workers, Confirm::Health],
            "-W without s: no sd_notify"
        );
        let go = config(Preset::Caddy).plan(&argv(&["caddy", "run", "-config", "/e/c.json"]));
        assert_eq!(
            go.check,
            Some(argv(&["caddy", "validate", "--config", "/e/c.json"])),
            "Go's flag package takes -config too"
        );
    }

    #[test]
    fn explicit_keys_win_and_health_needs_a_check() {
        let mut c = config(Preset::Nginx);
        c.health = false;
        let plan = c.plan(&argv(&["nginx"]));
        assert_eq!(
            plan.confirm.list(),
            [Confirm::Workers, Confirm::Retired],
            "no check, no health"
        );
        c.check = Some(Vec::new());
        c.confirm = Some(vec![Confirm::Ready]);
        c.command = Some(argv(&["/bin/reload-it"]));
        let plan = c.plan(&argv(&["nginx"]));
        assert_eq!(plan.check, None, "reload_check = [] turns it off");
        assert_eq!(plan.confirm.list(), [Confirm::Ready]);
        assert_eq!(plan.send, ReloadSend::Command(argv(&["/bin/reload-it"])));
        let mut c = config(Preset::Haproxy);
        c.signal = Some(Reload::Drop);
        let plan = c.plan(&argv(&["haproxy", "-f", "/a.cfg"]));
        assert_eq!(plan.send, ReloadSend::Disabled);
        assert_eq!(plan.confirm, Confirmations::default());
    }
}
