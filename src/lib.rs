//! handoff: runs an edge reverse proxy as its child on a node that shares a
//! floating IP (OpenBSD CARP, Linux keepalived) or announces it by BGP
//! anycast (BIRD 2), and makes sure the IP is only ever held (announced) by
//! a node whose proxy is up.
//!
//! # Theory of operation
//!
//! handoff holds the node at one of three *levels* (up, standby, down) and
//! adds or removes only its own share of the backend's demotion. It starts
//! `down`, spawns the proxy, and goes `up` once the proxy is healthy. On a
//! planned stop (SIGINT/SIGTERM) it goes `down` (the graceful handover of
//! keepalived and BGP: `standby` first, `down` once the IP moved), waits until the IP
//! has moved (only if this node held it, at most `failover_timeout`; a
//! `probe` can demand that the peer answers, and Consul's `confirm_peer`
//! that the peer reports master), waits `settle`,
//! sends the proxy its graceful stop signal, and SIGKILLs it after
//! `stop_timeout`. When the proxy dies it goes `down` first, then restarts it
//! or exits with its status. `down` outlives handoff: a node without a proxy
//! must never win the IP back.
//!
//! The code is laid out so that each of those rules has one home:
//!
//! * [`signals`]: signals are blocked on the first line of `main` and read by
//!   one thread, so from then on none is lost and none kills handoff by its
//!   default action.
//! * [`machine`]: every decision, as a pure `Event -> Vec<Action>` function,
//!   table-tested. The stop sequence is there and nowhere else.
//! * [`supervisor`]: the one dispatcher loop that feeds the machine and
//!   carries out its actions; the only owner of the proxy child.
//! * [`process`]: spawning with a clean slate, and the one reaper;
//!   [`child_env`]: what a child's environment loses (handoff's Consul
//!   credentials, its supervisor's `NOTIFY_SOCKET`).
//! * [`failover`]: the backends behind one trait, driven by a worker task:
//!   CARP (a counted share of a group's demote counter, with a crash-safe
//!   ledger), keepalived (a track file), BGP (BIRD's static protocols,
//!   switched over its control socket), commands, none.
//! * [`health`]: the promotion gate; [`probe`]: proof the peer serves the VIP.
//! * [`hooks`]: role-change hooks and master-only duties, run when the
//!   machine asks; never waited for by the failover; [`run_outcome`]: how
//!   one run ended, for status and metrics.
//! * [`reload`]: a reload's check, command and confirmations, run for the
//!   machine's steps; [`proxy_notify`]: the proxy's own NOTIFY_SOCKET, whose
//!   READY=1 confirms a reload (never its health).
//! * [`consul`]: the role reported to Consul, and the peers' roles read back
//!   (peer confirmation, split brain); never on the failover path.
//! * [`state`]: the locked state directory; [`files`]: how every file root
//!   writes is created (exclusive, random temp names, no symlink followed,
//!   atomic and durable), and the directories it writes in checked.
//! * [`agent`]: the start sequence, `handoff run` assembled in the order
//!   the lifecycle requires (locks, `down` confirmed, the [`sentinel`], then
//!   the rest); [`sentinel`]: the dead-man's switch.
//! * [`config`], [`check`], [`cli`], [`exit`], [`error`]: the interface;
//!   [`http`] and [`redact`]: what the network may ask and see.
//! * [`platform`]: everything that differs between Linux and OpenBSD.

pub mod agent;
pub mod check;
pub mod child_env;
pub mod cli;
pub mod config;
pub mod consul;
pub mod control;
pub mod error;
pub mod exit;
pub mod failover;
pub mod files;
pub mod health;
pub mod hooks;
pub mod host;
pub mod http;
pub mod logging;
pub mod loopback_vip;
pub mod machine;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod platform;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod proxy_notify;
pub mod redact;
pub mod reload;
pub mod run_outcome;
pub mod sentinel;
pub mod signals;
pub mod state;
pub mod status;
pub mod supervisor;
