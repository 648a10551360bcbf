//! The HTTP endpoint (`[http] listen`): `/healthz` for Nomad and Consul
//! checks, `/status` for scripts, `/metrics` for Prometheus.
//!
//! Owns the routes and the server's limits. Built on hyper's HTTP/1 server;
//! every connection carries one request (no keep-alive, so no idle
//! connections linger) and lasts at most [`CONNECTION_TIME`]. The limits keep
//! `/healthz`, and so the checks that read it, answering while someone
//! floods the port:
//!
//! * a client has [`HEADER_TIME`] to send its whole request head, of at most
//!   [`MAX_HEADERS`] (hyper's header read timeout is one deadline set when
//!   it starts reading the head, hyper 1.x `proto/h1/conn.rs`, so sending a
//!   byte at a time does not extend it);
//! * one client (an IPv4 address, an IPv6 /64) holds at most [`PER_CLIENT`]
//!   connections at once and all of them together [`MAX_CONNECTIONS`]; a
//!   connection over either limit is closed at once, before anything is read;
//! * once the path is read, `/status` and `/metrics` take one of
//!   [`BUSY_SLOTS`] or are answered 503; `/healthz` takes none, so scripts
//!   and scrapers never crowd a check out of the dispatcher's inbox.
//!
//! One client that opens connections and sends nothing therefore holds
//! [`PER_CLIENT`] slots for [`HEADER_TIME`] at a time, and everyone else
//! gets through (tests/http.rs floods from 127.0.0.2 while checking from
//! 127.0.0.1). Many addresses together can still fill [`MAX_CONNECTIONS`]:
//! that is why the default and the shipped Nomad job listen on loopback.
//!
//! What it shows: the dispatcher's status through [`redact::for_http`]
//! (docs/status.md, "What HTTP hides"); the control socket shows it whole.
//! Answers come from the dispatcher's loop through [`Inbox`]: if the loop
//! does not answer within [`LOOP_LIMIT`], `/healthz` says 503.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::Semaphore,
};

use crate::{
    control::{Ask, Inbox},
    metrics::Metrics,
    redact,
    status::Status,
};

/// Largest request head hyper buffers (its minimum is 8 KiB).
pub const MAX_HEADERS: usize = 8 * 1024;
/// Time a client has to send its whole request head. A check sends it at
/// once; 2 s leaves room for a loaded node and frees a slow client's slots
/// quickly.
pub const HEADER_TIME: Duration = Duration::from_secs(2);
/// Longest a connection may stay open at all.
pub const CONNECTION_TIME: Duration = Duration::from_secs(30);
/// Connections one client holds at once; more from it are closed at once.
pub const PER_CLIENT: usize = 8;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 128;
/// `/status` and `/metrics` requests served at once; more get 503.
/// `/healthz` never waits for one.
pub const BUSY_SLOTS: usize = 8;
/// How long the loop may take to answer before `/healthz` says 503.
pub const LOOP_LIMIT: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    inbox: Inbox,
    metrics: Arc<Metrics>,
    /// `[http] show_argv`
    show_argv: bool,
    /// [`BUSY_SLOTS`]
    busy: Semaphore,
}

/// Open connections by client ([`client`]).
#[derive(Debug, Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

impl Clients {
    /// Counts a connection from `peer`; `None` when its client already
    /// holds [`PER_CLIENT`].
    fn enter(self: &Arc<Self>, peer: IpAddr) -> Option<Counted> {
        let key = client(peer);
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(Counted {
            clients: self.clone(),
            key,
        })
    }
}

/// One connection counted for its client until it is dropped.
#[derive(Debug)]
struct Counted {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Who counts as one client: an IPv4 address (also when it arrives mapped
/// into IPv6), or an IPv6 /64, the least a single host is usually given.
fn client(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        },
    }
}

/// The listen backlog: connections the kernel completed that handoff has
/// not accepted yet. tokio's `bind` asks for 128 (the standard library's
/// value); while one client floods the port, 128 fill up between two turns
/// of the accept loop on a loaded node, and the kernel drops the next SYN,
/// a check's among them, which TCP sends again only after a second
/// (tests/http.rs saw `/healthz` take 1.02 s, and nstat's ListenOverflows
/// counted ~5 drops per flood). The kernel caps it at
/// `net.core.somaxconn` (listen(2); 4096 on current Linux) or OpenBSD's
/// `kern.somaxconn`.
pub const BACKLOG: u32 = 1024;

/// The endpoint's listening socket on `addr`, with [`BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's `bind` does: a restarted agent binds again while its old
    // connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, inbox: Inbox, metrics: Arc<Metrics>, show_argv: bool) {
    let shared = Arc::new(Shared {
        inbox,
        metrics,
        show_argv,
        busy: Semaphore::new(BUSY_SLOTS),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(Clients::default());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIME)
        .max_buf_size(MAX_HEADERS)
        .keep_alive(false);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Dropping the stream closes it at once.
        let Some(counted) = clients.enter(peer.ip()) else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &request).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIME, connection).await;
            drop((slot, counted));
        });
    }
}

/// The status as HTTP shows it ([`redact::for_http`]).
async fn status(shared: &Shared) -> Result<Status, &'static str> {
    let status = shared.inbox.ask(Ask::Status, LOOP_LIMIT).await?;
    Ok(redact::for_http(status, shared.show_argv))
}

async fn route(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/status" | "/metrics") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /status or /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // /status and /metrics hold one of BUSY_SLOTS until the answer is built.
    let _busy = if path == "/healthz" {
        None
    } else if let Ok(permit) = shared.busy.try_acquire() {
        Some(permit)
    } else {
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "busy: try again\n");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    match path {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/status" => match status(shared).await {
            Ok(status) => json(&status),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        },
        _ => match status(shared).await {
            Ok(status) => healthz(&status),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("unhealthy: {why}\n"),
            ),
        },
    }
}

/// 200 while the proxy runs (the loop answered, so it is turning); the
/// body says what the node is doing, and since when it is in maintenance
/// (not why: the reason is for `handoff status`).
fn healthz(status: &Status) -> Response<Full<Bytes>> {
    let Some(pid) = status.proxy.pid else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "unhealthy: the proxy is not running ({})\n",
                status.agent.phase
            ),
        );
    };
    let mut body = format!(
        "ok: proxy pid {pid} runs; {}, level {}, role {}",
        status.agent.phase,
        status.level.map_or("none".into(), |l| l.to_string()),
        status.role
    );
    if let Some(m) = &status.maintenance {
        let since = UNIX_EPOCH + Duration::from_secs(m.since);
        body.push_str("; in maintenance since ");
        body.push_str(&humantime::format_rfc3339_seconds(since).to_string());
    }
    body.push('\n');
    text(StatusCode::OK, &body)
}

fn json(status: &Status) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(status).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_is_an_ipv4_address_or_an_ipv6_64() {
        let table = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("::1", "::"),
        ];
        for (peer, key) in table {
            let peer: IpAddr = peer.parse().unwrap();
            assert_eq!(client(peer), key.parse::<IpAddr>().unwrap(), "{peer}");
        }
    }

    #[test]
    fn a_client_holds_per_client_connections_and_gets_them_back_when_they_close() {
        let clients = Arc::new(Clients::default());
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let mut held: Vec<Counted> = (0..PER_CLIENT)
            .map(|i| clients.enter(if i % 2 == 0 { one } else { same }).unwrap())
            .collect();
        assert!(clients.enter(one).is_none());
        assert!(clients.enter(same).is_none());
        let theirs = clients.enter(other).unwrap();
        held.pop();
        assert!(clients.enter(one).is_some(), "a closed one frees its place");
        drop((held, theirs));
        assert!(
            clients.0.lock().unwrap().is_empty(),
            "no client left behind"
        );
    }
}
