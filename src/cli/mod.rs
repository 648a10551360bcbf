//! The command line: parsing, and one function per subcommand.
//!
//! Owns: what each subcommand prints and which exit status it returns (via
//! [`Error::exit_code`]). Does not own: the running agent, which
//! `crate::agent` assembles (the start sequence) and `crate::supervisor`
//! runs.

mod direct;
mod operator;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    agent,
    check::{self, KillBudget},
    child_env::ChildEnv,
    config::{self, Backend, Location},
    error::Error,
    exit,
    maintenance::Reason,
    sentinel, signals,
};

/// Edge proxy supervisor: moves the floating IP away before the proxy stops.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $HANDOFF_CONFIG, else /etc/handoff.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise the proxy (the main mode)
    Run {
        /// The proxy and its arguments; overrides proxy.command in the config
        #[arg(last = true, value_name = "PROXY [ARGS]...")]
        proxy: Vec<String>,
    },
    /// Validate the config and the host, print warnings; exit 0, 78 (config)
    /// or 69 (the host lacks what the backend needs)
    Check {
        /// The supervisor's kill timeout to check the stop budget against
        /// (Nomad kill_timeout, systemd TimeoutStopSec, rc.d daemon_timeout)
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        kill_timeout: Option<Duration>,
    },
    /// Hold this node at standby for maintenance and wait until the IP left;
    /// exit 0 when it did, 1 when the wait timed out, 130 when ^C ended it
    /// (the demotion stays)
    Demote {
        /// Why, shown in status and Consul: one line of printable text, at
        /// most 256 bytes
        #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
        reason: Option<Reason>,
        /// Do not wait for the IP to move
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for the move [default: failover_timeout]
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Release the maintenance demotion and wait until the node is up; exit 1
    /// when it is not (an unhealthy proxy keeps it down)
    Promote,
    /// Check the proxy's new config, reload it and wait until the reload is
    /// confirmed; exit 0 when it is, 1 when it failed (the proxy keeps
    /// serving its old config), 69 when no agent runs
    Reload,
    /// Show level, role, maintenance, proxy, health and backend state
    Status {
        /// The JSON of docs/status.md instead of text
        #[arg(long)]
        json: bool,
    },
    /// Take this node down while no agent runs (boot scripts); exit 69 when
    /// one does
    Down,
    /// The dead-man's switch `run` starts for itself (handoff(8)); not for
    /// operators
    #[command(name = "sentinel", hide = true)]
    Sentinel,
}

/// A duration flag: the config's durations' ceiling holds here too, so an
/// absurd `--timeout` is a usage error (clap names the flag) instead of an
/// `Instant` overflow.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 1.5s, 250ms, 2m)"))?;
    config::duration_within(text, value, config::DURATION_CEILING)
}

/// `--reason`: what the agent's socket would accept ([`Reason::parse`]), so
/// a bad one is a usage error naming the flag (exit 64) before anything is
/// asked or written.
fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::parse(text).map_err(|e| e.to_string())
}

/// Parses the command line, runs the subcommand, and returns the exit status.
/// `blocked` is the result of blocking signals in `main`.
pub fn main(blocked: nix::Result<()>) -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap's own exit code for usage errors is 2; the spec says 64.
            return if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    if matches!(cli.command, Command::Run { .. } | Command::Sentinel) {
        agent::abort_on_panic();
    }
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::Demote { .. } | Command::Sentinel | Command::Down
    ) {
        // Short-lived tools: ^C should just end them. `demote` keeps them
        // blocked: it may run ifconfig itself, whose exits the signal reader
        // reaps, and ^C there ends the wait, never the demotion.
        let _ = signals::unblock();
    }
    let blocked = blocked.map_err(|e| Error::Os {
        what: "blocking signals",
        source: e.into(),
    });
    let result = match cli.command {
        Command::Run { proxy } => blocked.and_then(|()| agent::run(cli.config.as_deref(), proxy)),
        Command::Check { kill_timeout } => check(cli.config.as_deref(), kill_timeout),
        Command::Demote {
            reason,
            no_wait,
            timeout,
        } => blocked.and_then(|()| {
            operator::demote(cli.config.as_deref(), reason.as_ref(), no_wait, timeout)
        }),
        Command::Promote => operator::promote(cli.config.as_deref()),
        Command::Reload => operator::reload(cli.config.as_deref()),
        Command::Status { json } => operator::status(cli.config.as_deref(), json),
        Command::Sentinel => blocked.and_then(|()| sentinel::run(cli.config.as_deref())),
        Command::Down => blocked.and_then(|()| sentinel::down_without_agent(cli.config.as_deref())),
    };
    match result {
        Ok(code) => code,
        Err(Error::Config(errors)) => {
            eprintln!("{errors}");
            exit::CONFIG
        }
        Err(error) => {
            eprintln!("handoff: {error}");
            error.exit_code()
        }
    }
}

fn check(flag: Option<&std::path::Path>, kill_timeout: Option<Duration>) -> Result<u8, Error> {
    let location = Location::find(flag);
    let config = config::load(&location)?;
    if config.path.is_none() {
        println!(
            "no config file at {}; `handoff run -- PROXY` uses the defaults",
            location.path().display()
        );
    }
    // The Consul settings as `run` will read them: a bad CONSUL_HTTP_ADDR,
    // a missing token or TLS file fails here too (ExecStartPre, rc_pre).
    agent::consul_client(&config)?;
    let nomad = std::env::var("NOMAD_ALLOC_ID").ok();
    let budget = KillBudget::find(kill_timeout, nomad.as_deref());
    let env = ChildEnv::new(&config.proxy.keep_env);
    let host = check::host(&config, &env);
    for warning in check::warnings(&config, budget, nomad.is_some())
        .iter()
        .chain(&host.warnings)
    {
        eprintln!("warning: {warning}");
    }
    for note in &host.notes {
        println!("{note}");
    }
    let credentials = env.credentials_here();
    if !credentials.is_empty() {
        println!("{}", credentials.line());
    }
    if let Backend::Keepalived(k) = &config.backend {
        println!("{}", check::keepalived_snippet(k));
    }
    println!("{}", check::budget_line(&config));
    // The host last: a node that cannot run the backend must not start
    // (ExecStartPre, rc_pre), and says all that is missing at once.
    if let Some(error) = host.error(config.backend.name()) {
        return Err(error.into());
    }
    println!("configuration OK");
    Ok(exit::OK)
}
