//! `handoff run`: the running agent, assembled in the order the lifecycle
//! requires. This is the start sequence's one home (handoff(8), START
//! SEQUENCE; docs/design.md), as `crate::machine` is the stop sequence's.
//!
//! Owns: the order of the start (config, the node's locks, `down` confirmed,
//! the sentinel, then the control socket, Consul, HTTP and the supervisor),
//! and turning the config into what each part takes (the machine's
//! [`Policy`], the proxy's command line, the control group, Consul's client).
//! Does not own: parsing the command line and printing (`crate::cli`), or
//! any decision once the supervisor runs (`crate::machine`).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    check::{self, KillBudget},
    child_env::ChildEnv,
    config::{
        self, Argv, Backend, Handover, HealthGate, Location, ReloadPlan, ReloadSend, Resolved,
    },
    consul::{Client, Consul, Report, Settings},
    control::{
        Inbox,
        server::{Access, Claim, ControlSocket},
    },
    error::Error,
    exit,
    failover::{self, AnyBackend, Failover, Level},
    hooks::Hooks,
    http, logging,
    loopback_vip::LoopbackVip,
    machine::{Machine, Policy, ReloadBy, ReloadPolicy},
    maintenance::Maintenance,
    metrics::{self, Metrics},
    platform,
    process::Children,
    proxy_notify::NotifySocket,
    redact,
    reload::Reloader,
    sentinel::{ProxyLink, Sentinel},
    signals,
    state::StateDir,
    supervisor::Supervisor,
};

/// A panic in any thread or task ends the process at once (abort), instead
/// of leaving a node up behind a dead task: the proxy dies with handoff
/// (PDEATHSIG on Linux), and the sentinel and keepalived's tracking take the
/// node down (`crate::sentinel`).
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(%info, "panic: aborting");
        std::process::abort();
    }));
}

/// `handoff run`: the start sequence, in the order the lifecycle requires
/// (handoff(8), START SEQUENCE; docs/design.md):
///
/// 1. the config (without it the backend is unknown) and the proxy command;
/// 2. the node's locks: the control socket's and the state dir's, so that a
///    second agent is refused before it touches the backend;
/// 3. `down`, applied and confirmed by the backend (the CARP ledger settled
///    first): whatever fails after this leaves the node out of the election;
/// 4. everything else: the control socket, Consul, HTTP, the supervisor.
pub fn run(flag: Option<&std::path::Path>, proxy: Vec<String>) -> Result<u8, Error> {
    // Config errors exit 78 here, before anything is touched.
    let config = &config::load(&Location::find(flag))?;
    logging::init(&config.log);
    // So is a missing proxy command (exit 64): nothing to supervise, so the
    // backend is never touched.
    let argv = proxy_argv(config, proxy)?;
    // What `check` refuses (ExecStartPre) is only a warning here: the
    // backend itself refuses a start it cannot serve, at step 3.
    let env = children_env(config);
    let host = check::host(config, &env);
    for warning in check::warnings(config, KillBudget::Unknown, false)
        .iter()
        .chain(&host.problems)
        .chain(&host.warnings)
    {
        tracing::warn!("{warning}");
    }
    // 2. A second agent is refused here: by the control socket's lock (or a
    // live socket), then by the state dir's lock. So is a socket dir or a
    // state dir that others could change (crate::files), and, when the
    // backend is opened, the track file's directory: all before `down`.
    let group = control_group(config)?;
    let claim = ControlSocket::claim(&config.control.socket, group.as_ref().map(|g| g.1))?;
    // The state dir holds the CARP ledger and the maintenance record; the
    // boot id (the CARP ledger's boot marker) is read with it.
    let state = Arc::new(StateDir::open(&config.control.state_dir)?);
    let boot = failover::boot_id(&config.backend)?;
    if let Err(error) = platform::become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; orphaned proxy workers go to init");
    }
    let children = Children::new(env);
    let (runtime, signal_rx) = signals::runtime_and_reader(&children)?;
    runtime.block_on(async {
        // 3. CARP reconciles its ledger in `open`; a damaged ledger or a
        // missing tool stops here, before anything is spawned. So does a
        // host that would answer ARP for the VIPs on lo.
        let loopback = LoopbackVip::from_config(&config.backend);
        if let Some(refusal) = loopback.as_ref().and_then(LoopbackVip::refusal) {
            return Err(Error::Unavailable(refusal));
        }
        let mut backend =
            AnyBackend::open(&config.backend, children.clone(), state.clone(), boot).await?;
        // A failing backend is retried for up to failover_timeout; after
        // that the start is refused with exit 75, and nothing was started.
        backend
            .down_until(config.failover.timeout)
            .await
            .map_err(Error::Demotion)?;
        tracing::info!(backend = backend.name(), "down at start");
        // What a dead agent left on lo goes; the proxy is not serving yet.
        if let Some(loopback) = &loopback {
            loopback.set(false);
        }
        // The dead-man's switch, before the node can go up: from here on a
        // death of this process of any kind still takes the node down.
        let sentinel = match (&config.path, &config.backend) {
            (_, Backend::None) | (None, _) => None,
            (Some(path), _) => Some(Sentinel::start(children.clone(), path.clone()).map_err(
                |source| Error::Os {
                    what: "starting the sentinel",
                    source,
                },
            )?),
        };
        let link = sentinel.as_ref().map(Sentinel::link);
        let start = Start {
            claim,
            group,
            state,
            children,
            signal_rx,
            sentinel: link,
        };
        // Boxed: the supervisor's future is large (clippy::large_futures),
        // and lives for the whole run.
        let result = Box::pin(supervise(config, argv, start, backend)).await;
        if let Some(sentinel) = sentinel {
            // Every exit but 75 comes after a confirmed `down` (a start that
            // failed after step 3 included).
            let confirmed = !matches!(result, Ok(exit::DEMOTION_FAILED));
            sentinel.release(confirmed).await;
        }
        result
    })
}

/// Step 4 of the start, and the supervisor's run: a failure here leaves the
/// node down.
async fn supervise(
    config: &Resolved,
    argv: Argv,
    start: Start,
    backend: AnyBackend,
) -> Result<u8, Error> {
    let Start {
        claim,
        group,
        state,
        children,
        signal_rx,
        sentinel,
    } = start;
    {
        let control = claim.bind()?;
        // A node an operator put into maintenance stays at standby across restarts.
        let maintenance = Maintenance::load(state.path())?;
        let consul = consul_client(config)?;
        let plan = config.proxy.reload.plan(&argv);
        let notify = notify_socket(&plan, control.path())?;
        let policy = policy(config, &plan);
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            backend = config.backend.name(),
            command = %redact::argv(&argv, config.http.show_argv),
            stop_signal = policy.stop_signal.as_str(),
            reload = %match &plan.send {
                ReloadSend::Signal(signal) => signal.as_str().to_owned(),
                ReloadSend::Command(command) => redact::argv(command, config.http.show_argv),
                ReloadSend::Disabled => "disabled".to_owned(),
            },
            reload_check = %plan
                .check
                .as_ref()
                .map_or_else(|| "none".to_owned(), |c| redact::argv(c, config.http.show_argv)),
            reload_confirm = ?plan.confirm.list(),
            control = %control.path().display(),
            "starting"
        );
        let reloader = Reloader::new(
            plan,
            config.proxy.gate.checks().cloned(),
            children.clone(),
            config.http.show_argv,
        );
        let (inbox_tx, inbox_rx) = mpsc::channel(16);
        let inbox = Inbox(inbox_tx);
        let metrics = Arc::new(Metrics::for_node(&node_metrics(config)));
        if let Some(addr) = config.http.listen {
            let listener = http::listen(addr).map_err(|source| Error::Listen { addr, source })?;
            let local = listener.local_addr().map_or(addr, |a| a);
            tracing::info!(listen = %local, "http listening");
            let serve = http::serve(
                listener,
                inbox.clone(),
                metrics.clone(),
                config.http.show_argv,
            );
            tokio::spawn(serve);
        }
        let hooks = Hooks::new(
            &config.hooks,
            &config.duties,
            &config.backend.vips(),
            children.clone(),
            metrics.clone(),
            sentinel.clone(),
        );
        // The supervisor runs on this (main) thread: it forks the proxy, and
        // Linux's PDEATHSIG fires when the forking *thread* exits.
        let mut supervisor = Supervisor {
            machine: Machine::new(policy),
            argv,
            show_argv: config.http.show_argv,
            group: config.proxy.process_group,
            children,
            signals: signal_rx,
            health: config.proxy.gate.checks().cloned(),
            probe: config.failover.probe.clone(),
            maintenance,
            stop_budget: config.budget.total(),
            inbox: inbox_rx,
            metrics: metrics.clone(),
            consul: None,
            sentinel,
            reloader,
            notify,
            hooks,
            hooks_exit_limit: config.budget.on_stop,
            loopback: LoopbackVip::from_config(&config.backend),
        };
        tokio::spawn(control.serve(
            Access::new(group),
            inbox,
            state,
            config.proxy.reload.timeout,
        ));
        // Reporting starts only now: a start that fails above must not leave
        // a registration behind that nobody deregisters.
        if let Some((client, settings)) = consul {
            let first = Report::new(&supervisor.machine.view(), supervisor.maintenance.as_ref());
            supervisor.consul = Some(Consul::start(client, settings, first, &metrics));
        }
        Ok(supervisor.run(backend).await)
    }
}

/// What steps 1-3 of the start hand to step 4.
struct Start {
    claim: Claim,
    group: Option<(String, nix::unistd::Gid)>,
    state: Arc<StateDir>,
    children: Children,
    signal_rx: signals::Signals,
    sentinel: Option<ProxyLink>,
}

/// What every child's environment loses (`[proxy] keep_env` keeps some),
/// said once at start: which Consul credentials in our environment the
/// children will not see, and which they keep. Names only, never values.
fn children_env(config: &Resolved) -> ChildEnv {
    let env = ChildEnv::new(&config.proxy.keep_env);
    let credentials = env.credentials_here();
    if !credentials.is_empty() {
        let list = |names: &[&str]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(",")
            }
        };
        tracing::info!(
            stripped = %list(&credentials.stripped),
            kept = %list(&credentials.kept),
            "Consul credentials stripped from the children's environment"
        );
    }
    env
}

/// The proxy's command line: after `--`, else `[proxy] command`.
fn proxy_argv(config: &Resolved, proxy: Vec<String>) -> Result<Argv, Error> {
    match (proxy.is_empty(), &config.proxy.command) {
        (false, _) => Ok(Argv(proxy)),
        (true, Some(command)) => Ok(command.clone()),
        (true, None) => Err(Error::Usage(
            "no proxy command: give it after `--` (handoff run -- traefik ...) or set [proxy] command".into(),
        )),
    }
}

/// `[consul]` over the `CONSUL_HTTP_*` environment, and the client built
/// from it. The token and TLS files are read here, so a missing or bad one
/// stops the start (exit 78) before anything runs.
pub fn consul_client(config: &Resolved) -> Result<Option<(Client, Settings)>, Error> {
    let Some(consul) = &config.consul else {
        return Ok(None);
    };
    let node = crate::host::node_name();
    let settings = Settings::resolve(consul, |name| std::env::var(name).ok(), &node)?;
    Ok(Some((Client::new(&settings)?, settings)))
}

/// `[control] group` and its gid, if set.
fn control_group(config: &Resolved) -> Result<Option<(String, nix::unistd::Gid)>, Error> {
    let Some(name) = &config.control.group else {
        return Ok(None);
    };
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(Some((group.name, group.gid))),
        Ok(None) => Err(Error::NoGroup(name.clone())),
        Err(source) => Err(Error::GroupLookup {
            name: name.clone(),
            source,
        }),
    }
}

/// The proxy's own NOTIFY_SOCKET, `<control socket>.notify`, when READY=1
/// confirms its reloads: beside the control socket, in the directory the
/// claim made private, and under its lock.
fn notify_socket(
    plan: &ReloadPlan,
    control: &std::path::Path,
) -> Result<Option<NotifySocket>, Error> {
    if !plan.confirm.ready {
        return Ok(None);
    }
    let mut path = control.as_os_str().to_owned();
    path.push(".notify");
    NotifySocket::bind(std::path::Path::new(&path))
        .map(Some)
        .map_err(|source| Error::Os {
            what: "binding the proxy's notify socket",
            source,
        })
}

/// The decisions' inputs, as the resolved config gives them, with the
/// reload planned for the proxy's command line.
fn policy(config: &Resolved, plan: &ReloadPlan) -> Policy {
    Policy {
        reload: ReloadPolicy {
            send: match plan.send {
                ReloadSend::Signal(signal) => ReloadBy::Signal(signal),
                ReloadSend::Command(_) => ReloadBy::Command,
                ReloadSend::Disabled => ReloadBy::Disabled,
            },
            check: plan.check.is_some(),
            confirm: plan.confirm,
            timeout: plan.timeout,
        },
        stop_signal: config.proxy.stop_signal,
        stop_timeout: config.proxy.stop_timeout,
        failover_timeout: config.failover.timeout,
        settle: config.failover.settle,
        restart: config.proxy.restart,
        startup_gate: match config.proxy.gate {
            HealthGate::RunningFor(gate) => Some(gate),
            HealthGate::Checks(_) => None,
        },
        exit_code_map: config.proxy.exit_code_map.clone(),
        // Graceful keepalived handover stops at standby first; everything
        // else goes straight down.
        stop_level: match config.backend.handover() {
            Handover::Graceful => Level::Standby,
            Handover::Fast => Level::Down,
        },
        probe: config.failover.probe.is_some(),
        confirm_peer: config.consul.as_ref().is_some_and(|c| c.confirm_peer),
        hooks: config.hooks.each().next().is_some(),
        duties: !config.duties.is_empty(),
        loopback_vip: LoopbackVip::from_config(&config.backend).is_some(),
    }
}

/// What `handoff_info` and `handoff_stop_budget_seconds` say of this node.
fn node_metrics(config: &Resolved) -> metrics::Node {
    let service = config.consul.as_ref().map_or_else(
        || crate::config::ConsulConfig::default().service,
        |c| c.service.clone(),
    );
    let vips: Vec<String> = config
        .backend
        .vips()
        .iter()
        .map(ToString::to_string)
        .collect();
    metrics::Node {
        service,
        vips: vips.join(","),
        backend: config.backend.name(),
        several_masters: config.backend.several_masters(),
        stop_budget: config.budget.total(),
        hooks: config.hooks.each().map(|(name, _)| name).collect(),
        duties: config
            .duties
            .iter()
            .map(|d| d.name.get_ref().clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use std::path::Path;

    use super::{Metrics, node_metrics};

    #[test]
    fn handoff_info_names_the_service_the_vips_and_the_backend() {
        let config = crate::config::parse(
            Path::new("node.toml"),
            "[failover]\nbackend = \"keepalived\"\n\
             [failover.keepalived]\nvip = [\"192.0.2.10\", \"192.0.2.11\"]\n\
             [consul]\nservice = \"web-edge\"\n",
        )
        .unwrap();
        let text = Metrics::for_node(&node_metrics(&config)).encode();
        assert!(
            text.contains(
                "handoff_info{service=\"web-edge\",vip=\"192.0.2.10,192.0.2.11\",\
                 backend=\"keepalived\",several_masters=\"false\"} 1\n"
            ),
            "{text}"
        );
        let budget = config.budget.total().as_secs_f64();
        assert!(
            text.contains(&format!("handoff_stop_budget_seconds {budget:?}\n")),
            "{budget}: {text}"
        );
    }
}
