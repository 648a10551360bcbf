//! The control socket: how `handoff status` (and later `demote`/`promote`)
//! reach the running agent. [`protocol`] is shared by both sides.

pub mod protocol;
