//! The probe: proof that the peer serves the floating IP after this node
//! released it (`[failover] probe`). A TCP connect, or an HTTP GET answered
//! 2xx, through the VIP from here. Retried every 50 ms until it succeeds;
//! the machine's `failover_timeout` bounds the whole wait, and the task is
//! aborted when the wait ends.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::{config::Probe, health};

const RETRY: Duration = Duration::from_millis(50);
/// One attempt; a peer that is taking over answers in milliseconds.
const ATTEMPT: Duration = Duration::from_millis(500);

/// Probes until one attempt succeeds (the caller drops it when the wait
/// is over).
pub async fn until_answered(probe: Probe) {
    loop {
        match tokio::time::timeout(ATTEMPT, once(&probe)).await {
            Ok(Ok(())) => return,
            Ok(Err(why)) => tracing::debug!(%why, "probe failed"),
            Err(_) => tracing::debug!(?ATTEMPT, "probe timed out"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn once(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp(addr) => TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}")),
        Probe::Http(url) => health::http_get(url).await,
    }
}
