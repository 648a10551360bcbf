//! The health gate: runs the configured check every `interval`, and reports
//! a verdict after `rise` passes in a row (healthy) or `fall` failures in a
//! row (unhealthy). The machine promotes only on a healthy verdict and
//! demotes at once on an unhealthy one.
//!
//! Owns: the three checks (HTTP GET, TCP connect, a command) and the rise/fall
//! counting. One checker runs per proxy, started by the dispatcher when the
//! proxy is spawned and aborted when it exits; its reports carry the proxy's
//! generation so that a late verdict about a dead proxy is dropped.

use std::{num::NonZeroU32, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use crate::{
    config::{Check, HealthCheck, HttpUrl},
    process::{Children, ProcessEnd, run_command},
};

/// Longest HTTP status line we read; the rest of the answer is ignored.
const STATUS_LINE_LIMIT: u64 = 512;

/// A verdict about the proxy of `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Which proxy (the dispatcher counts spawns).
    pub generation: u64,
    /// Healthy or not.
    pub healthy: bool,
}

/// What `handoff status` shows of the checks of the running proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthView {
    /// The gate's verdict.
    pub healthy: bool,
    /// Passes in a row (counts towards `rise`).
    pub passes: u32,
    /// Failures in a row (counts towards `fall`).
    pub failures: u32,
    /// Why the last check failed; `None` when it passed or none ran yet.
    pub last_error: Option<String>,
    /// When the last check finished, in seconds since the Unix epoch.
    pub last_at: Option<u64>,
}

/// Rise/fall counting: pure, so it is table-tested.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    rise: u32,
    fall: u32,
    passes: u32,
    failures: u32,
    healthy: bool,
}

impl Counter {
    /// Starts unhealthy: a proxy is not promoted before `rise` passes.
    pub fn new(rise: NonZeroU32, fall: NonZeroU32) -> Self {
        Counter {
            rise: rise.get(),
            fall: fall.get(),
            passes: 0,
            failures: 0,
            healthy: false,
        }
    }

    /// Records one result; returns the new verdict when it changes.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        let verdict = if self.healthy {
            self.failures < self.fall
        } else {
            self.passes >= self.rise
        };
        (verdict != self.healthy).then(|| {
            self.healthy = verdict;
            verdict
        })
    }
}

/// Starts checking the proxy of `generation`; abort the handle when it
/// exits. Each result is also published in `view`.
pub fn spawn(
    gate: HealthCheck,
    children: Children,
    generation: u64,
    verdicts: mpsc::Sender<Verdict>,
    view: watch::Sender<HealthView>,
) -> JoinHandle<()> {
    view.send_replace(HealthView::default());
    tokio::spawn(async move {
        let mut counter = Counter::new(gate.rise, gate.fall);
        let mut ticks = tokio::time::interval(gate.interval);
        // A slow check delays the next one rather than firing a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = tokio::time::timeout(
                gate.timeout,
                check_once(&gate.check, &children, gate.timeout),
            )
            .await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(why)) => {
                    tracing::debug!(generation, %why, "health check failed");
                    Some(why)
                }
                Err(_) => {
                    tracing::debug!(generation, timeout = ?gate.timeout, "health check timed out");
                    Some(format!(
                        "no answer within {}",
                        humantime::format_duration(gate.timeout)
                    ))
                }
            };
            let verdict = counter.record(error.is_none());
            view.send_replace(HealthView {
                healthy: counter.healthy,
                passes: counter.passes,
                failures: counter.failures,
                last_error: error,
                last_at: Some(crate::host::unix_now()),
            });
            if let Some(healthy) = verdict {
                tracing::info!(generation, healthy, "health verdict");
                if verdicts
                    .send(Verdict {
                        generation,
                        healthy,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}

/// Runs one check; `Err` says why it failed.
pub async fn check_once(
    check: &Check,
    children: &Children,
    timeout: Duration,
) -> Result<(), String> {
    match check {
        Check::Tcp(addr) => TcpStream::connect(&addr.0)
            .await
            .map(drop)
            .map_err(|e| format!("connect {}: {e}", addr.0)),
        Check::Http(url) => http_get(url).await,
        Check::Exec(argv) => {
            let output = run_command(children, argv.program(), argv.args(), timeout)
                .await
                .map_err(|e| e.to_string())?;
            if output.end == ProcessEnd::Exited(0) {
                Ok(())
            } else {
                Err(format!("`{argv}` {}", output.end))
            }
        }
    }
}

/// GET `url` and pass on a 2xx status (as Nomad's and Consul's HTTP checks do).
pub(crate) async fn http_get(url: &HttpUrl) -> Result<(), String> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect {}: {e}", url.text))?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: handoff/{}\r\nConnection: close\r\n\r\n",
        url.path,
        url.port,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {}: {e}", url.text))?;
    // Up to the end of the status line only, at most STATUS_LINE_LIMIT bytes.
    let mut head = Vec::new();
    BufReader::new(stream.take(STATUS_LINE_LIMIT))
        .read_until(b'\n', &mut head)
        .await
        .map_err(|e| format!("read from {}: {e}", url.text))?;
    let line = String::from_utf8_lossy(&head);
    match status_code(&line) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("{} answered {code}", url.text)),
        None => Err(format!(
            "{} sent no HTTP status line: {:?}",
            url.text,
            line.trim_end()
        )),
    }
}

/// The code in `HTTP/1.x NNN reason`.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn rise_and_fall_count_results_in_a_row() {
        // (rise, fall, results, verdict changes)
        let table: &[(u32, u32, &str, &[Option<bool>])] = &[
            (2, 2, "++", &[None, Some(true)]),
            (2, 2, "+-+", &[None, None, None]),
            (1, 1, "+-", &[Some(true), Some(false)]),
            (
                2,
                3,
                "++--+---",
                &[None, Some(true), None, None, None, None, None, Some(false)],
            ),
            (3, 1, "--+++", &[None, None, None, None, Some(true)]),
        ];
        for (rise, fall, results, expected) in table {
            let mut c = Counter::new(n(*rise), n(*fall));
            let got: Vec<Option<bool>> = results.chars().map(|r| c.record(r == '+')).collect();
            assert_eq!(&got, expected, "rise {rise} fall {fall} results {results}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(""), None);
    }

    #[test]
    fn urls() {
        let u: HttpUrl = "http://127.0.0.1:8080/ping?x=1".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/ping?x=1")
        );
        let u: HttpUrl = "http://[::1]/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 80, "/"));
        let u: HttpUrl = "http://localhost".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/")
        );
        for bad in [
            "https://x/",
            "ftp://x",
            "http://:80/",
            "http://x:0/",
            "http://x:http/",
            "http://[::1/",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
        assert!(
            "https://x/"
                .parse::<HttpUrl>()
                .unwrap_err()
                .contains("plain HTTP")
        );
    }
}
