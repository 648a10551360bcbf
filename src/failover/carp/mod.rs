//! OpenBSD CARP (`backend = "carp"`).
//!
//! So far only the reading side exists: [`output`] parses what ifconfig(8)
//! prints for an interface group's demote counter and for carp interfaces.
//! The backend that raises and lowers our share of the counter (through the
//! crash-safe ledger) is not built yet; `handoff run` refuses `carp` with
//! exit 69 until it is.

pub mod ledger;
pub mod output;
