//! Checks across keys, after serde has checked every value where it stands.
//! Each problem carries the span of the key or section it belongs to.

use std::ops::Range;

use toml::Spanned;

use super::hooks::duty_name_problem;
use super::{
    BackendKind, Config, Confirm, ConsulConfig, ControlConfig, FailoverConfig, ProxyConfig,
};
use crate::child_env::CONSUL_CREDENTIALS;

pub(super) type Problem = (Option<Range<usize>>, String);

/// Checks across keys; every problem is returned with the span it belongs to.
pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    failover(&config.failover, &mut problems);
    bgp(&config.failover, &mut problems);
    proxy(&config.proxy, &mut problems);
    control(&config.control, &mut problems);
    hooks(config, &mut problems);
    if let Some(consul) = &config.consul {
        self::consul(consul, &mut problems);
    }
    problems
}

fn failover(failover: &FailoverConfig, problems: &mut Vec<Problem>) {
    let backend = failover.backend();
    // A backend section that does not match `backend` is almost always a
    // forgotten `backend = ...`: running with `none` would silently drop the
    // safety the operator configured.
    let sections = [
        (BackendKind::Carp, failover.carp.as_ref().map(Spanned::span)),
        (
            BackendKind::Keepalived,
            failover.keepalived.as_ref().map(Spanned::span),
        ),
        (
            BackendKind::Command,
            failover.command.as_ref().map(Spanned::span),
        ),
        (BackendKind::Bgp, failover.bgp.as_ref().map(Spanned::span)),
    ];
    for (kind, span) in sections {
        if let Some(span) = span
            && kind != backend
        {
            problems.push((
                Some(span),
                format!(
                    "[failover.{0}] is set but backend is \"{1}\"; set backend = \"{0}\" or remove the section",
                    kind.name(),
                    backend.name()
                ),
            ));
        }
    }
    if backend == BackendKind::Command && failover.command.is_none() {
        problems.push((
            failover.backend.as_ref().map(Spanned::span),
            "backend = \"command\" needs a [failover.command] section with demote, promote and state".into(),
        ));
    }
    // Zero is a valid "never wait" for failover_timeout, but a command that
    // may take no time at all always times out.
    if let Some(command) = &failover.command
        && command.get_ref().timeout.is_zero()
    {
        problems.push((
            Some(command.span()),
            "[failover.command] timeout must be more than 0".into(),
        ));
    }
    if backend == BackendKind::Keepalived
        && failover
            .keepalived
            .as_ref()
            .is_none_or(|k| k.get_ref().vip.is_empty())
    {
        problems.push((
            failover.keepalived.as_ref().map(Spanned::span).or_else(|| failover.backend.as_ref().map(Spanned::span)),
            "backend = \"keepalived\" needs [failover.keepalived] vip = [\"...\"]: the addresses whose presence here means MASTER".into(),
        ));
    }
    if let Some(keepalived) = &failover.keepalived {
        let k = keepalived.get_ref();
        if k.standby_value >= 0 || k.down_value >= 0 {
            problems.push((
                Some(keepalived.span()),
                "standby_value and down_value must be negative (they lower this node's priority)"
                    .into(),
            ));
        }
        if k.down_value > k.standby_value {
            problems.push((
                Some(keepalived.span()),
                format!(
                    "down_value {} is above standby_value {}; down must lower the priority at least as far",
                    k.down_value, k.standby_value
                ),
            ));
        }
    }
}

/// `[failover.bgp]`: prefixes to announce, and two different protocols.
fn bgp(failover: &FailoverConfig, problems: &mut Vec<Problem>) {
    if failover.backend() != BackendKind::Bgp {
        return;
    }
    let Some(bgp) = &failover.bgp else {
        problems.push((
            failover.backend.as_ref().map(Spanned::span),
            "backend = \"bgp\" needs a [failover.bgp] section with prefixes = [\"...\"]: what handoff's BIRD protocols announce".into(),
        ));
        return;
    };
    let b = bgp.get_ref();
    if b.prefixes.is_empty() {
        problems.push((
            Some(bgp.span()),
            "[failover.bgp] prefixes is empty, expected the service prefixes handoff's BIRD protocols announce, such as [\"192.0.2.53/32\"]".into(),
        ));
    }
    if b.up_protocol == b.standby_protocol {
        problems.push((
            Some(bgp.span()),
            format!(
                "[failover.bgp] up_protocol and standby_protocol are both {:?}: standby needs a protocol of its own, whose routes the export filter makes less preferred",
                b.up_protocol.0
            ),
        ));
    }
    if b.timeout.is_zero() {
        problems.push((
            Some(bgp.span()),
            "[failover.bgp] timeout must be more than 0".into(),
        ));
    }
}

fn proxy(proxy: &ProxyConfig, problems: &mut Vec<Problem>) {
    for name in &proxy.keep_env {
        if let Some(message) = keep_env_problem(name.get_ref()) {
            problems.push((Some(name.span()), message));
        }
    }
    reload(proxy, problems);
    let Some(health) = &proxy.health else { return };
    let h = health.get_ref();
    let span = Some(health.span());
    let kinds = usize::from(h.http.is_some())
        + usize::from(h.tcp.is_some())
        + usize::from(h.exec.is_some());
    if kinds != 1 {
        problems.push((
            span.clone(),
            format!("[proxy.health] needs exactly one of http, tcp or exec (found {kinds})"),
        ));
    }
    if h.interval.is_zero() || h.timeout.is_zero() {
        problems.push((
            span.clone(),
            "[proxy.health] interval and timeout must be more than 0".into(),
        ));
    }
    if h.timeout > h.interval {
        problems.push((
            span,
            "[proxy.health] timeout is longer than interval; checks would overlap".into(),
        ));
    }
}

/// The reload keys against each other and the health check.
fn reload(proxy: &ProxyConfig, problems: &mut Vec<Problem>) {
    if let (Some(command), Some(_)) = (&proxy.reload_command, proxy.reload_signal) {
        problems.push((
            Some(command.span()),
            "reload_command and reload_signal are both set; a reload is either a command or a signal"
                .into(),
        ));
    }
    if let Some(check) = &proxy.reload_check
        && check.get_ref().first().is_some_and(String::is_empty)
    {
        problems.push((
            Some(check.span()),
            "reload_check has an empty program name, expected [\"program\", \"arg\", ...], or [] for no check".into(),
        ));
    }
    if let Some(confirm) = &proxy.reload_confirm
        && confirm.get_ref().contains(&Confirm::Health)
        && proxy.health.is_none()
    {
        problems.push((
            Some(confirm.span()),
            "reload_confirm has \"health\" but there is no [proxy.health] check to run".into(),
        ));
    }
}

/// What is wrong with a `keep_env` name: it must be a variable name (not
/// empty, no `=`, no NUL: environ(7)), and one handoff strips, since keeping
/// anything else does nothing and is most likely a typo.
fn keep_env_problem(name: &str) -> Option<String> {
    let stripped = CONSUL_CREDENTIALS.join(", ");
    if name.is_empty() {
        Some(format!(
            "keep_env has an empty name, expected one of {stripped}"
        ))
    } else if name.contains(['=', '\0']) {
        Some(format!(
            "keep_env name `{}` contains `=` or NUL, which no variable name can: expected one of {stripped}",
            name.escape_debug()
        ))
    } else if !CONSUL_CREDENTIALS.contains(&name) {
        Some(format!(
            "keep_env name `{}` is not a variable handoff strips (only {stripped}): children inherit it already",
            name.escape_debug()
        ))
    } else {
        None
    }
}

/// Hook and duty users exist; duty names are names, and unique; a duty's
/// interval is one.
fn hooks(config: &Config, problems: &mut Vec<Problem>) {
    let users = config
        .hooks
        .each()
        .filter_map(|(_, hook)| hook.get_ref().user.as_ref())
        .chain(config.duty.iter().filter_map(|d| d.user.as_ref()));
    for user in users {
        let name = user.get_ref();
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push((Some(user.span()), format!("user `{name}` does not exist"))),
            Err(e) => problems.push((
                Some(user.span()),
                format!("cannot look up user `{name}`: {e}"),
            )),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for duty in &config.duty {
        let name = duty.name.get_ref();
        if let Some(problem) = duty_name_problem(name) {
            problems.push((Some(duty.name.span()), problem));
        } else if !seen.insert(name.clone()) {
            problems.push((
                Some(duty.name.span()),
                format!("a second duty named `{name}`"),
            ));
        }
        if duty.every < std::time::Duration::from_secs(1) || duty.jitter >= duty.every {
            problems.push((
                Some(duty.name.span()),
                format!("duty `{name}`: every must be at least 1s and jitter less than every"),
            ));
        }
        // Every announcing node is master on BGP: a duty would run on all of
        // them. Refused until a duty can take a lock in Consul.
        if config.failover.backend() == BackendKind::Bgp {
            problems.push((
                Some(duty.name.span()),
                format!(
                    "duty `{name}`: backend = \"bgp\" has several masters at once (every node that announces at full preference), so a master-only duty would run on each; duties need a single master (a Consul lock per duty is not built yet)"
                ),
            ));
        }
    }
}

fn control(control: &ControlConfig, problems: &mut Vec<Problem>) {
    let Some(group) = &control.group else { return };
    let name = group.get_ref();
    match nix::unistd::Group::from_name(name) {
        Ok(Some(_)) => {}
        Ok(None) => problems.push((Some(group.span()), format!("group `{name}` does not exist"))),
        Err(e) => problems.push((
            Some(group.span()),
            format!("cannot look up group `{name}`: {e}"),
        )),
    }
}

fn consul(section: &Spanned<ConsulConfig>, problems: &mut Vec<Problem>) {
    let consul = section.get_ref();
    let span = Some(section.span());
    if consul.service.is_empty() || consul.service_id.is_empty() {
        problems.push((
            span.clone(),
            "[consul] service and service_id must not be empty".into(),
        ));
    }
    // The check is refreshed every ttl/3; below a second that is a request
    // storm on the agent for no gain.
    if consul.ttl < std::time::Duration::from_secs(1) {
        problems.push((span.clone(), "[consul] ttl must be at least 1s".into()));
    }
    // Consul's minimum; a shorter value would be raised silently.
    if consul
        .deregister_critical_after
        .is_some_and(|d| d < std::time::Duration::from_secs(60))
    {
        problems.push((
            span,
            "[consul] deregister_critical_after must be at least 1m (Consul's minimum)".into(),
        ));
    }
}
