//! `backend = "bgp"`: BGP anycast through BIRD 2. Every healthy edge node
//! announces the service prefixes; handoff decides how.
//!
//! The operator's bird.conf holds two static protocols for the prefixes,
//! both `disabled` in the file (config/bird/handoff.conf), so a BIRD that
//! starts, restarts or reloads its config announces nothing until handoff
//! says so. handoff enables and disables them over BIRD's control socket
//! (`bird.rs`), never editing a file:
//!
//! | level     | `up_protocol` | `standby_protocol` | the routers see            |
//! |-----------|---------------|--------------------|----------------------------|
//! | `up`      | enabled       | disabled           | the prefixes               |
//! | `standby` | disabled      | enabled            | the prefixes, less preferred |
//! | `down`    | disabled      | disabled           | a withdrawal               |
//!
//! The export filter makes the standby protocol's routes less preferred
//! (AS-path prepends or a community); the up protocol's routes carry a
//! higher BIRD preference, so while both are enabled the up route is the one
//! exported. A move between `up` and `standby` enables the new protocol
//! before it disables the old one: the router gets one update, never a
//! withdrawal. A `configure` or a restart of BIRD puts both protocols back
//! to disabled; the next look (1 s at most) sees that and applies the level
//! again.
//!
//! The role: MASTER while announcing at full preference, or while a router
//! still points at this node (below); BACKUP while at standby; FAULT while
//! withdrawn, when no session to a router is established, or when BIRD is
//! not running (it announces nothing then). A router never sends a route
//! back to the peer it learned it from (BIRD's `bgp_preexport`; and this
//! node would drop it as an AS-path loop), so a route for a prefix imported
//! over a session means that router's best path points elsewhere. With
//! `sessions` set, a node at standby stays MASTER until every established
//! session has such a route for every prefix: that is what the graceful
//! handover waits for. Several nodes are MASTER at once by design.

mod bird;

use std::time::Duration;

use bird::{Connection, ProtocolState, lists_a_route, protocol_state};

pub use bird::BirdError;

use super::{Failover, FailoverError, Level, Role, Watch};
use crate::config::{BgpConfig, BirdName};

/// Role polling while waiting for a move. A look is one connection and a
/// few commands, well under a millisecond of BIRD's time; the router acts
/// on an update within about as long, so a move is seen within this.
const FAST_POLL: Duration = Duration::from_millis(10);
/// Role polling otherwise: also how soon a BIRD that restarted or reloaded
/// its config gets our level back.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What one look at BIRD found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
struct Seen {
    /// BIRD answered on its control socket.
    running: bool,
    /// `up_protocol`'s state.
    up: Option<ProtocolState>,
    /// `standby_protocol`'s state.
    standby: Option<ProtocolState>,
    /// Each session's state.
    sessions: Vec<(String, ProtocolState)>,
    /// Every established session imported a route for every prefix: each
    /// router's best path points elsewhere (`None` without sessions).
    routers_elsewhere: Option<bool>,
}

/// The BGP backend.
#[derive(Debug)]
pub struct BgpBackend {
    config: BgpConfig,
    /// The level last applied, re-applied when BIRD forgot it.
    applied: Option<Level>,
    /// The last look, for `handoff status`.
    seen: Seen,
}

impl BgpBackend {
    /// A backend talking to the BIRD behind `config.socket`. Nothing is
    /// checked here: a BIRD that is not running yet announces nothing,
    /// which is `down` already (`handoff check` asks BIRD for the
    /// protocols).
    pub fn open(config: BgpConfig) -> BgpBackend {
        BgpBackend {
            config,
            applied: None,
            seen: Seen::default(),
        }
    }

    async fn connect(&self) -> Result<Connection, BirdError> {
        Connection::open(self.config.socket.clone(), self.config.timeout).await
    }

    /// Whether BIRD announces nothing of ours: both protocols disabled, or
    /// BIRD not running. Agent-less `demote` must not raise such a node.
    pub async fn withdrawn(&self) -> Result<bool, FailoverError> {
        let mut bird = match self.connect().await {
            Err(e) if e.not_running() => return Ok(true),
            other => other?,
        };
        let up = state(&mut bird, &self.config.up_protocol).await?;
        let standby = state(&mut bird, &self.config.standby_protocol).await?;
        Ok(!up.enabled() && !standby.enabled())
    }

    /// Enables or disables the protocols for `level`, the new one first.
    async fn apply(
        bird: &mut Connection,
        config: &BgpConfig,
        level: Level,
    ) -> Result<(), FailoverError> {
        let (up, standby) = (&config.up_protocol, &config.standby_protocol);
        let steps: [(&str, &BirdName); 2] = match level {
            Level::Up => [("enable", up), ("disable", standby)],
            Level::Standby => [("enable", standby), ("disable", up)],
            // The standby route first: were both enabled, the up route
            // stays the exported one until the withdrawal.
            Level::Down => [("disable", standby), ("disable", up)],
        };
        for (verb, name) in steps {
            // Quoted, a name is a pattern; `BirdName` holds no wildcard.
            bird.command(&format!("{verb} \"{name}\""))
                .await
                .map_err(|e| missing(e, name))?;
        }
        Ok(())
    }

    /// One look: the protocols, the sessions and the routers' routes.
    async fn look(&self, bird: &mut Connection) -> Result<Seen, FailoverError> {
        let mut seen = Seen {
            running: true,
            up: Some(state(bird, &self.config.up_protocol).await?),
            standby: Some(state(bird, &self.config.standby_protocol).await?),
            ..Seen::default()
        };
        for name in &self.config.sessions {
            seen.sessions
                .push((name.0.clone(), state(bird, name).await?));
        }
        if !self.config.sessions.is_empty() {
            let mut elsewhere = true;
            for (name, session) in &seen.sessions {
                if *session != ProtocolState::Up {
                    continue;
                }
                for prefix in &self.config.prefixes {
                    let command = format!("show route {prefix} protocol {name}");
                    elsewhere &= match bird.command(&command).await {
                        Ok(reply) => lists_a_route(&reply),
                        // `8001 Network not found`: no route for the prefix
                        // in the session's table at all.
                        Err(BirdError::Refused { code: 8001, .. }) => false,
                        Err(error) => return Err(error.into()),
                    };
                }
            }
            seen.routers_elsewhere = Some(elsewhere);
        }
        Ok(seen)
    }
}

/// What `handoff check` finds wrong: BIRD not answering, or lacking a
/// protocol or session the config names. Each entry is one problem.
pub async fn problems(config: &BgpConfig) -> Vec<String> {
    let mut bird = match Connection::open(config.socket.clone(), config.timeout).await {
        Ok(bird) => bird,
        Err(error) => {
            return vec![format!(
                "{error}: the bgp backend needs BIRD 2 running with config/bird/handoff.conf"
            )];
        }
    };
    let mut out = Vec::new();
    let names = [&config.up_protocol, &config.standby_protocol]
        .into_iter()
        .chain(&config.sessions);
    for name in names {
        if let Err(error) = state(&mut bird, name).await {
            out.push(error.to_string());
        }
    }
    out
}

/// `name`'s state, or the error that says the bird.conf lacks it.
async fn state(bird: &mut Connection, name: &BirdName) -> Result<ProtocolState, FailoverError> {
    let reply = bird
        .command(&format!("show protocols \"{name}\""))
        .await
        .map_err(|e| missing(e, name))?;
    protocol_state(&reply, &name.0).map_err(FailoverError::Local)
}

/// BIRD's "no protocols match" as the missing protocol it means.
fn missing(error: BirdError, name: &BirdName) -> FailoverError {
    match error {
        BirdError::Refused { code: 8003, .. } => FailoverError::Missing(format!(
            "BIRD has no protocol named {name} (add it from config/bird/handoff.conf to bird.conf)"
        )),
        other => other.into(),
    }
}

/// The level the protocols' states stand for, if they stand for one.
fn level_of(up: ProtocolState, standby: ProtocolState) -> Option<Level> {
    match (up.enabled(), standby.enabled()) {
        (true, false) => Some(Level::Up),
        (false, true) => Some(Level::Standby),
        (false, false) => Some(Level::Down),
        (true, true) => None,
    }
}

/// The role from one look (see the module's documentation).
fn role_of(seen: &Seen) -> Role {
    let sessions_up =
        seen.sessions.is_empty() || seen.sessions.iter().any(|(_, s)| *s == ProtocolState::Up);
    if !seen.running || !sessions_up {
        return Role::Fault;
    }
    let announcing = |s: Option<ProtocolState>| s == Some(ProtocolState::Up);
    if announcing(seen.up) {
        Role::Master
    } else if announcing(seen.standby) {
        if seen.routers_elsewhere == Some(false) {
            Role::Master
        } else {
            Role::Backup
        }
    } else {
        Role::Fault
    }
}

impl Failover for BgpBackend {
    fn name(&self) -> &'static str {
        "bgp"
    }

    async fn set_level(&mut self, level: Level) -> Result<(), FailoverError> {
        // Unknown until it succeeds: a half-applied level is applied again.
        self.applied = None;
        match self.connect().await {
            // A BIRD that is not running announces nothing; it starts with
            // our protocols disabled, and the next look applies the level.
            Err(e) if e.not_running() && level == Level::Down => {}
            Err(e) => return Err(e.into()),
            Ok(mut bird) => Self::apply(&mut bird, &self.config, level).await?,
        }
        self.applied = Some(level);
        Ok(())
    }

    async fn role(&mut self) -> Result<Role, FailoverError> {
        let mut bird = match self.connect().await {
            Err(e) if e.not_running() => {
                self.seen = Seen::default();
                return Ok(Role::Fault);
            }
            other => other?,
        };
        let mut seen = self.look(&mut bird).await?;
        if let (Some(applied), Some(up), Some(standby)) = (self.applied, seen.up, seen.standby)
            && level_of(up, standby) != Some(applied)
        {
            // BIRD restarted or reloaded its config (our protocols start
            // disabled), or someone used birdc: our level goes back.
            tracing::warn!(level = %applied, up = ?up, standby = ?standby, "BIRD's protocols do not match our level: applying it again");
            Self::apply(&mut bird, &self.config, applied).await?;
            seen = self.look(&mut bird).await?;
        }
        self.seen = seen;
        Ok(role_of(&self.seen))
    }

    fn poll_interval(&self, watch: Watch) -> Option<Duration> {
        Some(watch.pick(IDLE_POLL, FAST_POLL))
    }

    fn details(&self) -> serde_json::Value {
        let prefixes: Vec<String> = self
            .config
            .prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        serde_json::json!({
            "socket": self.config.socket,
            "prefixes": prefixes,
            "level": self.applied,
            "bird_running": self.seen.running,
            "up_protocol": { "name": self.config.up_protocol.0, "state": self.seen.up },
            "standby_protocol": { "name": self.config.standby_protocol.0, "state": self.seen.standby },
            "sessions": self.seen.sessions.iter().map(|(name, state)| serde_json::json!({"name": name, "state": state})).collect::<Vec<_>>(),
            "routers_elsewhere": self.seen.routers_elsewhere,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolState::{Down, Start, Up};

    fn seen(
        up: ProtocolState,
        standby: ProtocolState,
        sessions: &[ProtocolState],
        elsewhere: Option<bool>,
    ) -> Seen {
        Seen {
            running: true,
            up: Some(up),
            standby: Some(standby),
            sessions: sessions
                .iter()
                .map(|s| ("uplink".to_string(), *s))
                .collect(),
            routers_elsewhere: elsewhere,
        }
    }

    #[test]
    fn roles() {
        let table = [
            // Full preference is master, whatever the router prefers.
            (seen(Up, Down, &[Up], Some(true)), Role::Master),
            (seen(Up, Down, &[], None), Role::Master),
            // Standby: master while a router still points here.
            (seen(Down, Up, &[Up], Some(false)), Role::Master),
            (seen(Down, Up, &[Up], Some(true)), Role::Backup),
            (seen(Down, Up, &[], None), Role::Backup),
            // Withdrawn, or nowhere to announce: fault.
            (seen(Down, Down, &[Up], Some(false)), Role::Fault),
            (seen(Up, Down, &[Down], Some(true)), Role::Fault),
            (seen(Up, Down, &[Start, Down], Some(true)), Role::Fault),
            (seen(Up, Down, &[Start, Up], Some(true)), Role::Master),
            (Seen::default(), Role::Fault),
        ];
        for (look, role) in table {
            assert_eq!(role_of(&look), role, "{look:?}");
        }
    }

    #[test]
    fn levels_from_protocol_states() {
        assert_eq!(level_of(Up, Down), Some(Level::Up));
        assert_eq!(level_of(Start, Down), Some(Level::Up));
        assert_eq!(level_of(Down, Up), Some(Level::Standby));
        assert_eq!(level_of(Down, Down), Some(Level::Down));
        assert_eq!(level_of(Up, Up), None);
    }
}
