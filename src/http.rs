//! The HTTP endpoint (`[http] listen`): `/healthz` for Nomad and Consul
//! checks, `/status` for scripts, `/metrics` for Prometheus.
//!
//! Owns the routes and the server's limits. Built on hyper's HTTP/1 server:
//! headers are bounded in size ([`MAX_HEADERS`]) and time ([`HEADER_TIME`]),
//! every connection carries one request (no keep-alive, so no idle
//! connections linger) and at most [`MAX_CONNECTIONS`] are served at once.
//! Answers come from the dispatcher's loop through [`Inbox`]: if the loop
//! does not answer within [`LOOP_LIMIT`], `/healthz` says 503.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    control::{Ask, Inbox},
    metrics::Metrics,
    status::Status,
};

/// Largest request head hyper buffers (its minimum is 8 KiB).
pub const MAX_HEADERS: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const HEADER_TIME: Duration = Duration::from_secs(5);
/// Longest a connection may stay open at all.
const CONNECTION_TIME: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long the loop may take to answer before `/healthz` says 503.
pub const LOOP_LIMIT: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    inbox: Inbox,
    metrics: Arc<Metrics>,
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, inbox: Inbox, metrics: Arc<Metrics>) {
    let shared = Arc::new(Shared { inbox, metrics });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIME)
        .max_buf_size(MAX_HEADERS)
        .keep_alive(false);
    let builder = Arc::new(builder);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
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
            drop(slot);
        });
    }
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
        "/status" => match shared.inbox.ask(Ask::Status, LOOP_LIMIT).await {
            Ok(status) => json(&status),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        },
        _ => match shared.inbox.ask(Ask::Status, LOOP_LIMIT).await {
            Ok(status) => healthz(&status),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("unhealthy: {why}\n"),
            ),
        },
    }
}

/// 200 while the proxy runs (the loop answered, so it is turning); the
/// body says what the node is doing, maintenance included.
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
        body.push_str("; in maintenance: ");
        body.push_str(&m.reason);
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
