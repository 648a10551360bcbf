//! Checks across keys, after serde has checked every value where it stands.
//! Each problem carries the span of the key or section it belongs to.

use toml::Spanned;

use super::{BackendKind, Config};

pub(super) type Problem = (Option<std::ops::Range<usize>>, String);

/// Checks across keys; every problem is returned with the span it belongs to.
pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let failover = &config.failover;
    let backend = failover.backend();
    let backend_span = failover.backend.as_ref().map(Spanned::span);

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
            backend_span,
            "backend = \"command\" needs a [failover.command] section with demote, promote and state".into(),
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

    if let Some(health) = &config.proxy.health {
        let h = health.get_ref();
        let kinds = usize::from(h.http.is_some())
            + usize::from(h.tcp.is_some())
            + usize::from(h.exec.is_some());
        if kinds != 1 {
            problems.push((
                Some(health.span()),
                format!("[proxy.health] needs exactly one of http, tcp or exec (found {kinds})"),
            ));
        }
        if h.timeout > h.interval {
            problems.push((
                Some(health.span()),
                "[proxy.health] timeout is longer than interval; checks would overlap".into(),
            ));
        }
    }

    if let Some(group) = &config.control.group {
        match nix::unistd::Group::from_name(group.get_ref()) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push((
                Some(group.span()),
                format!("group `{}` does not exist", group.get_ref()),
            )),
            Err(e) => problems.push((
                Some(group.span()),
                format!("cannot look up group `{}`: {e}", group.get_ref()),
            )),
        }
    }
    problems
}
