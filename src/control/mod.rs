//! The control socket: how `handoff status`, `demote` and `promote` reach the
//! running agent, and how the agent's other servers (HTTP) ask its loop.
//!
//! Owns: the socket's lifecycle and access checks ([`server`]), the client
//! side ([`client`]), and [`ToAgent`], the one way into the dispatcher's
//! loop from outside. [`protocol`] is shared by both sides of the socket.
//! Acting on the backend when no agent answers is the CLI's
//! (`crate::cli`'s `direct`).

pub mod client;
pub mod protocol;
pub mod server;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{maintenance::Maintenance, status::Status};

/// A question for the dispatcher's loop; it answers with its status after
/// acting on it.
#[derive(Debug)]
pub struct ToAgent {
    /// What to do.
    pub ask: Ask,
    /// Where the status goes.
    pub reply: oneshot::Sender<Status>,
}

/// What the loop is asked.
#[derive(Debug, Clone)]
pub enum Ask {
    /// Only the status (also proves the loop is turning).
    Status,
    /// The maintenance record was written (`Some`) or removed (`None`).
    Maintenance(Option<Maintenance>),
}

/// The dispatcher's inbox, shared by the control and HTTP servers.
#[derive(Debug, Clone)]
pub struct Inbox(pub mpsc::Sender<ToAgent>);

impl Inbox {
    /// Asks the loop; `Err` when it does not answer within `limit` (it is
    /// stuck, or exiting).
    pub async fn ask(&self, ask: Ask, limit: Duration) -> Result<Status, &'static str> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.0
                .send(ToAgent { ask, reply })
                .await
                .map_err(|_| "the agent is exiting")?;
            answer.await.map_err(|_| "the agent is exiting")
        };
        tokio::time::timeout(limit, asked)
            .await
            .map_err(|_| "the agent's loop did not answer in time")?
    }
}
