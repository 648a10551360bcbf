//! The control socket: how `handoff status`, `demote`, `promote` and
//! `reload` reach the running agent, and how the agent's other servers (HTTP) ask its loop.
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

use protocol::ReloadDone;

/// How a reload asked for by `handoff reload` ended: confirmed, or why not.
pub type ReloadAnswer = Result<ReloadDone, String>;

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
#[derive(Debug)]
pub enum Ask {
    /// Only the status (also proves the loop is turning).
    Status,
    /// The maintenance record was written (`Some`) or removed (`None`).
    Maintenance(Option<Maintenance>),
    /// A reload; its outcome goes here once it ended (the status is
    /// answered at once).
    Reload(oneshot::Sender<ReloadAnswer>),
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

    /// Asks for a reload and waits for its outcome: `Err` when the loop does
    /// not take the request within `take`, or the reload does not end within
    /// `end` after that (the machine ends it at `reload_timeout`).
    pub async fn reload(
        &self,
        take: Duration,
        end: Duration,
    ) -> Result<ReloadAnswer, &'static str> {
        let (tx, outcome) = oneshot::channel();
        self.ask(Ask::Reload(tx), take).await?;
        tokio::time::timeout(end, outcome)
            .await
            .map_err(|_| "the reload did not end in time")?
            .map_err(|_| "the agent is exiting")
    }
}
