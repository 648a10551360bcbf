//! `GET /metrics`: the agent's Prometheus metrics, encoded by the
//! prometheus-client crate (OpenMetrics text, which Prometheus reads).
//!
//! Owns the metric names (spec, "Interfaces to others") and their meaning.
//! The dispatcher updates them; the HTTP server only encodes them.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

use crate::{
    failover::{Level, Role},
    run_outcome::Outcome,
};

/// The roles `handoff_role` has a series for.
const ROLES: [(Role, &str); 4] = [
    (Role::Master, "master"),
    (Role::Backup, "backup"),
    (Role::Fault, "fault"),
    (Role::Unknown, "unknown"),
];

/// How a hook run can end: a superseded one is skipped, never stopped.
const HOOK_OUTCOMES: [Outcome; 4] = [
    Outcome::Ok,
    Outcome::Failed,
    Outcome::Timeout,
    Outcome::Skipped,
];

/// How a duty run can end: one is stopped when the node leaves master.
const DUTY_OUTCOMES: [Outcome; 4] = [
    Outcome::Ok,
    Outcome::Failed,
    Outcome::Timeout,
    Outcome::Stopped,
];

type RoleLabels = Vec<(String, String)>;
type Labels = Vec<(String, String)>;

/// 10 ms .. 5 min: a hook touches a file in ms, a certificate renewal
/// takes a minute.
fn hook_buckets() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0])
}

/// What `handoff_info` and `handoff_stop_budget_seconds` say of this node.
#[derive(Debug, Clone)]
pub struct Node {
    /// `[consul] service`, or Consul's default `edge` without Consul: the
    /// name alert rules group nodes by.
    pub service: String,
    /// The floating addresses, comma-separated (empty when the backend
    /// names none).
    pub vips: String,
    /// `[failover] backend`.
    pub backend: &'static str,
    /// Several masters are normal on this backend.
    pub several_masters: bool,
    /// The whole stop budget.
    pub stop_budget: std::time::Duration,
    /// The configured hooks (`on_master`...) and duties, by name.
    pub hooks: Vec<&'static str>,
    /// The configured duties, by name.
    pub duties: Vec<String>,
}

/// The metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    role: Family<RoleLabels, Gauge>,
    role_changes: Counter,
    demoted: Gauge,
    maintenance: Gauge,
    proxy_up: Gauge,
    restarts: Counter,
    reloads: Counter,
    reload_failures: Counter,
    hook_runs: Family<Labels, Counter>,
    hook_duration: Family<Labels, Histogram>,
    duty_runs: Family<Labels, Counter>,
    failover: Histogram,
    backend_failures: Counter,
    consul_errors: Counter,
    split_brain: Gauge,
    last_role: std::sync::Mutex<Option<Role>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at their start values.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            role: Family::default(),
            role_changes: Counter::default(),
            demoted: Gauge::default(),
            maintenance: Gauge::default(),
            proxy_up: Gauge::default(),
            restarts: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            hook_runs: Family::default(),
            hook_duration: Family::new_with_constructor(hook_buckets),
            duty_runs: Family::default(),
            // 50 ms .. ~50 s: CARP moves in one advert round trip, keepalived
            // in ~3 x advert_int on a priority drop.
            failover: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
            ]),
            backend_failures: Counter::default(),
            consul_errors: Counter::default(),
            split_brain: Gauge::default(),
            last_role: std::sync::Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "handoff_build",
            "handoff's version",
            Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        registry.register(
            "handoff_role",
            "1 for this node's current role as the backend reports it",
            metrics.role.clone(),
        );
        registry.register(
            "handoff_role_changes",
            "Role changes seen",
            metrics.role_changes.clone(),
        );
        registry.register(
            "handoff_demoted",
            "1 while our share of the demotion is applied (level standby or down)",
            metrics.demoted.clone(),
        );
        registry.register(
            "handoff_maintenance",
            "1 while an operator holds this node in maintenance",
            metrics.maintenance.clone(),
        );
        registry.register(
            "handoff_proxy_up",
            "1 while the proxy runs",
            metrics.proxy_up.clone(),
        );
        registry.register(
            "handoff_proxy_restarts",
            "Proxy restarts",
            metrics.restarts.clone(),
        );
        register_operations(&mut registry, &metrics);
        registry.register(
            "handoff_failover_seconds",
            "From the stop signal to the confirmed move of the floating IP",
            metrics.failover.clone(),
        );
        registry.register(
            "handoff_backend_failures",
            "Backend operations that failed",
            metrics.backend_failures.clone(),
        );
        registry.register(
            "handoff_consul_errors",
            "Consul requests that failed",
            metrics.consul_errors.clone(),
        );
        registry.register(
            "handoff_split_brain",
            "1 while more than one live node has been tagged master in Consul for longer than 2 x ttl",
            metrics.split_brain.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// All metrics, with the node's own: `handoff_info` (1, labelled with
    /// what alert rules group and filter by) and
    /// `handoff_stop_budget_seconds`.
    pub fn for_node(node: &Node) -> Metrics {
        let mut metrics = Metrics::new();
        metrics.registry.register(
            "handoff",
            "This node: its service, floating addresses and backend (several_masters: a backend where every healthy node is master, BGP anycast)",
            Info::new(vec![
                ("service".to_owned(), node.service.clone()),
                ("vip".to_owned(), node.vips.clone()),
                ("backend".to_owned(), node.backend.to_owned()),
                ("several_masters".to_owned(), node.several_masters.to_string()),
            ]),
        );
        let budget: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        budget.set(node.stop_budget.as_secs_f64());
        // Every configured hook and duty at zero for each result it can end
        // with: a series that appears only with its first run makes
        // increase() miss that run, and the dashboard show nothing.
        for hook in &node.hooks {
            for result in HOOK_OUTCOMES {
                metrics
                    .hook_runs
                    .get_or_create_owned(&labels("hook", hook, result));
            }
            metrics
                .hook_duration
                .get_or_create_owned(&vec![("hook".to_owned(), (*hook).to_owned())]);
        }
        for duty in &node.duties {
            for result in DUTY_OUTCOMES {
                metrics
                    .duty_runs
                    .get_or_create_owned(&labels("duty", duty, result));
            }
        }
        metrics.registry.register(
            "handoff_stop_budget_seconds",
            "The longest a planned stop can take (handoff check's stop budget)",
            budget,
        );
        metrics
    }

    /// Sets the gauges from the machine's view after an event.
    pub fn observe(&self, role: Role, applied: Option<Level>, maintenance: bool, proxy_up: bool) {
        for (r, name) in ROLES {
            self.role
                .get_or_create(&vec![("role".to_owned(), name.to_owned())])
                .set(i64::from(r == role));
        }
        if let Ok(mut last) = self.last_role.lock() {
            if last.is_some_and(|l| l != role && l != Role::Unknown) {
                self.role_changes.inc();
            }
            *last = Some(role);
        }
        let demoted = matches!(applied, Some(Level::Standby | Level::Down));
        self.demoted.set(i64::from(demoted));
        self.maintenance.set(i64::from(maintenance));
        self.proxy_up.set(i64::from(proxy_up));
    }

    /// A proxy restart.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// A hook ended (`seconds`: how long it ran, for one that ran).
    pub fn hook_ran(&self, hook: &str, result: Outcome, seconds: Option<f64>) {
        self.hook_runs
            .get_or_create(&labels("hook", hook, result))
            .inc();
        if let Some(seconds) = seconds {
            self.hook_duration
                .get_or_create(&vec![("hook".to_owned(), hook.to_owned())])
                .observe(seconds);
        }
    }

    /// A duty's run ended.
    pub fn duty_ran(&self, duty: &str, result: Outcome) {
        self.duty_runs
            .get_or_create(&labels("duty", duty, result))
            .inc();
    }

    /// A reload began.
    pub fn reload_began(&self) {
        self.reloads.inc();
    }

    /// A reload failed.
    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// A confirmed move, `seconds` after the stop began.
    pub fn moved(&self, seconds: f64) {
        self.failover.observe(seconds);
    }

    /// Sets the backend failure counter to the worker's count.
    pub fn backend_failures(&self, total: u64) {
        let seen = self.backend_failures.get();
        if total > seen {
            self.backend_failures.inc_by(total - seen);
        }
    }

    /// A Consul call failed.
    pub fn consul_error(&self) {
        self.consul_errors.inc();
    }

    /// Sets `handoff_split_brain`.
    pub fn split_brain(&self, on: bool) {
        self.split_brain.set(i64::from(on));
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The labels of one hook's or duty's (`kind`) runs that ended in `result`.
fn labels(kind: &str, name: &str, result: Outcome) -> Labels {
    vec![
        (kind.to_owned(), name.to_owned()),
        ("result".to_owned(), result.name().to_owned()),
    ]
}

/// The operators' and the node's work besides the failover: reloads, hooks
/// and duties.
fn register_operations(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "handoff_reloads",
        "Reloads begun (SIGHUP, handoff reload)",
        metrics.reloads.clone(),
    );
    registry.register(
        "handoff_reload_failures",
        "Reloads that failed: the check failed, the send failed, or the reload was not confirmed in time",
        metrics.reload_failures.clone(),
    );
    registry.register(
        "handoff_hook_runs",
        "Role-change hook runs, by hook and result (ok, failed, timeout, skipped)",
        metrics.hook_runs.clone(),
    );
    registry.register(
        "handoff_hook_duration_seconds",
        "How long role-change hooks ran",
        metrics.hook_duration.clone(),
    );
    registry.register(
        "handoff_duty_runs",
        "Master-only duty runs, by duty and result (ok, failed, timeout, stopped)",
        metrics.duty_runs.clone(),
    );
}
