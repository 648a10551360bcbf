//! `[hooks]` and `[[duty]]`: commands run when this node's role changes, and
//! commands run periodically while it is master at level `up`.
//!
//! Owns: the sections' types, their defaults, and their checks (a user that
//! exists, a duty name that is one, an interval that is one). When each runs
//! is the machine's decision; running them is `crate::hooks`'.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Argv, values};

/// A hook's timeout when the file gives none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `[hooks]`: one optional command per role change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// The backend reports this node as master.
    pub on_master: Option<Spanned<HookCommand>>,
    /// ... as backup.
    pub on_backup: Option<Spanned<HookCommand>>,
    /// ... as fault.
    pub on_fault: Option<Spanned<HookCommand>>,
    /// An operator set maintenance (`handoff demote`).
    pub on_maintenance: Option<Spanned<HookCommand>>,
    /// The stop sequence began (in parallel with the move).
    pub on_stop: Option<Spanned<HookCommand>>,
}

impl HooksConfig {
    /// Every configured hook, with its name.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &Spanned<HookCommand>)> {
        [
            ("on_master", &self.on_master),
            ("on_backup", &self.on_backup),
            ("on_fault", &self.on_fault),
            ("on_maintenance", &self.on_maintenance),
            ("on_stop", &self.on_stop),
        ]
        .into_iter()
        .filter_map(|(name, hook)| hook.as_ref().map(|h| (name, h)))
    }
}

/// One hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookCommand {
    /// The argv, run without a shell.
    pub command: Argv,
    /// Past this, its process group is killed.
    #[serde(with = "values::duration", default = "default_hook_timeout")]
    pub timeout: Duration,
    /// Run as this user (and its primary group) instead of handoff's.
    pub user: Option<Spanned<String>>,
}

fn default_hook_timeout() -> Duration {
    DEFAULT_HOOK_TIMEOUT
}

/// One `[[duty]]`: a command run every `every` while this node is master
/// at level `up`, and stopped the moment it is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyConfig {
    /// Names it in logs, status and the environment (`[a-z0-9_-]+`).
    pub name: Spanned<String>,
    /// The argv, run without a shell.
    pub command: Argv,
    /// From one start to the next.
    #[serde(with = "values::duration")]
    pub every: Duration,
    /// Each wait is `every` plus or minus a random part of this.
    #[serde(with = "values::duration", default)]
    pub jitter: Duration,
    /// Past this, its process group is killed; default `every`.
    #[serde(default, deserialize_with = "values::duration::optional")]
    pub timeout: Option<Duration>,
    /// Run as this user (and its primary group) instead of handoff's.
    pub user: Option<Spanned<String>>,
}

impl DutyConfig {
    /// Its timeout: explicit, else `every`, so a run never overlaps the
    /// next.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.every)
    }
}

/// What is wrong with a duty's name, if anything.
pub fn duty_name_problem(name: &str) -> Option<String> {
    let good = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (!good).then(|| {
        format!(
            "duty name `{}` must be 1 to 64 of a-z, 0-9, - and _ (it names the duty in logs, status and HANDOFF_DUTY)",
            name.escape_debug()
        )
    })
}
