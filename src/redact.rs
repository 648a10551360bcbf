//! What the HTTP endpoint and the logs may show of the proxy's command line,
//! of URLs and of the maintenance record (docs/status.md, "What HTTP
//! hides").
//!
//! Owns the rules and [`for_http`], the one function over a [`Status`] that
//! applies them. The snapshot itself stays whole: the control socket, which
//! only root and the control group reach, shows it as the dispatcher built
//! it (`crate::supervisor`); `GET /status` and `/healthz` (`crate::http`)
//! show it through [`for_http`], because anyone who reaches the port reads
//! them; the log lines that announce the proxy's start (`crate::agent`,
//! `crate::supervisor`) show its command line through [`argv`], because the
//! journal and Nomad's logs have more readers than the control socket.

use crate::{config::Argv, maintenance::Reason, status::Status};

/// What stands in for what is hidden.
pub const REDACTED: &str = "[redacted]";

/// `argv` as the logs show it: whole with `[http] show_argv`, else through
/// [`words`].
pub fn argv(argv: &Argv, show: bool) -> String {
    if show {
        argv.to_string()
    } else {
        words(argv.0.iter().map(String::as_str))
    }
}

/// A command line without its values: the program, then every option name
/// as is (`-v`, `--config`, the `--name` of `--name=value`, `--`) and every
/// other word as [`REDACTED`]. Values are where secrets go (`--token=...`,
/// `-p PASSWORD`, a URL with credentials); option names say what the proxy
/// was asked to do. A short option with its value attached (`-pSECRET`)
/// cannot be told from several short options, so it is redacted whole.
pub fn words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let mut words = words.into_iter();
    let mut out = words.next().unwrap_or_default().to_owned();
    for word in words {
        out.push(' ');
        match word.split_once('=') {
            _ if is_option_name(word) => out.push_str(word),
            Some((name, _)) if name.len() > "--".len() && is_long_name(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(REDACTED),
        }
    }
    out
}

/// `--`, `--name` or `-x`.
fn is_option_name(word: &str) -> bool {
    if word.starts_with("--") {
        word == "--" || is_long_name(word)
    } else {
        let mut chars = word.chars();
        chars.next() == Some('-')
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.next().is_none()
    }
}

/// `--name`: a letter, then letters, digits, `-`, `_` or `.` (traefik's
/// `--entrypoints.web.address`).
fn is_long_name(word: &str) -> bool {
    word.strip_prefix("--").is_some_and(|name| {
        name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    })
}

/// `text` with every URL in it (`scheme://...` up to a space or a quote)
/// stripped of its userinfo (`user:password@`) and its query (`?...`, with
/// any fragment): `http://[redacted]@host/path?[redacted]`. Punctuation that
/// ends a sentence after a URL (`connect URL: refused`) is kept.
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + "://".len());
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let body = url.trim_end_matches([':', ',', ';', '.', ')']);
        let (authority, path) = body.split_at(body.find(['/', '?', '#']).unwrap_or(body.len()));
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        // A `?` after the fragment's `#` is the fragment's, not a query.
        match path
            .find(['?', '#'])
            .filter(|&at| path[at..].starts_with('?'))
        {
            Some(at) => {
                out.push_str(&path[..=at]);
                out.push_str(REDACTED);
            }
            None => out.push_str(path),
        }
        out.push_str(&url[body.len()..]);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `status` as HTTP shows it. Field names and types stay those of
/// docs/status.md; what changes:
///
/// * `proxy.command`, and the command of an exec health check in
///   `health.check` and `health.last_error`: through [`words`], unless
///   `show_argv`;
/// * URLs in `health.check`, `health.last_error`, `consul.address` and
///   `consul.last_error`: through [`urls`];
/// * `maintenance.reason`: [`REDACTED`] (free text written for operators;
///   that the node is in maintenance, since when and by which uid stay).
pub fn for_http(mut status: Status, show_argv: bool) -> Status {
    // The snapshot joins the words with spaces (`Argv`'s Display), so a
    // word that holds a space is redacted as two: more hidden, never less.
    let command = |text: &str| words(text.split(' '));
    if !show_argv {
        status.proxy.command = command(&status.proxy.command);
    }
    if let Some(health) = &mut status.health {
        if let Some(argv) = health.check.strip_prefix("exec ").filter(|_| !show_argv) {
            let shown = command(argv);
            if let Some(error) = &mut health.view.last_error {
                *error = error.replace(argv, &shown);
            }
            health.check = format!("exec {shown}");
        }
        health.check = urls(&health.check);
        health.view.last_error = health.view.last_error.as_deref().map(urls);
    }
    if let Some(maintenance) = &mut status.maintenance {
        maintenance.reason = Reason::sanitised(REDACTED);
    }
    if let Some(consul) = &mut status.consul {
        consul.address = urls(&consul.address);
        consul.last_error = consul.last_error.as_deref().map(urls);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_the_program_and_option_names_and_hide_values() {
        let table = [
            ("traefik", "traefik"),
            (
                "traefik --configfile local/traefik.yml",
                "traefik --configfile [redacted]",
            ),
            (
                "traefik --token=s3cret --api.insecure=true",
                "traefik --token=[redacted] --api.insecure=[redacted]",
            ),
            (
                "nginx -g daemon off; -c /etc/nginx/nginx.conf",
                "nginx -g [redacted] [redacted] -c [redacted]",
            ),
            (
                "haproxy -W -db -f /etc/haproxy.cfg -pSECRET",
                "haproxy -W [redacted] -f [redacted] [redacted]",
            ),
            (
                "caddy run --config /etc/Caddyfile -- --x -1 - --=x ---a",
                "caddy [redacted] --config [redacted] -- --x [redacted] [redacted] [redacted] [redacted]",
            ),
            (
                "/usr/bin/proxy --password=pa=ss --user_name=u",
                "/usr/bin/proxy --password=[redacted] --user_name=[redacted]",
            ),
            ("", ""),
        ];
        for (argv, shown) in table {
            assert_eq!(words(argv.split(' ')), shown, "{argv}");
        }
    }

    #[test]
    fn argv_is_whole_only_when_shown() {
        let argv = Argv(vec!["nginx".into(), "-g".into(), "daemon off;".into()]);
        assert_eq!(super::argv(&argv, true), "nginx -g daemon off;");
        // Word by word: the value with a space is one word.
        assert_eq!(super::argv(&argv, false), "nginx -g [redacted]");
    }

    #[test]
    fn urls_lose_their_userinfo_and_query() {
        let table = [
            (
                "http http://127.0.0.1:8082/ping",
                "http http://127.0.0.1:8082/ping",
            ),
            (
                "http http://127.0.0.1:8082/ping?token=s3cret",
                "http http://127.0.0.1:8082/ping?[redacted]",
            ),
            (
                "connect http://127.0.0.1:1/ping?key=a:b: Connection refused (os error 111)",
                "connect http://127.0.0.1:1/ping?[redacted]: Connection refused (os error 111)",
            ),
            (
                "https://user:pa@ss@consul:8501?dc=x#frag, then \"http://u@h/p?q\"",
                "https://[redacted]@consul:8501?[redacted], then \"http://[redacted]@h/p?[redacted]\"",
            ),
            (
                "http://h/a#f?x and unix:///run/consul.sock",
                "http://h/a#f?x and unix:///run/consul.sock",
            ),
            ("no url: here?x=1 @ all", "no url: here?x=1 @ all"),
            ("ends in ://", "ends in ://"),
        ];
        for (text, shown) in table {
            assert_eq!(urls(text), shown, "{text}");
        }
    }

    fn status() -> Status {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "version": "0.1.0", "node": "edge-a",
            "agent": { "pid": 812, "uptime_seconds": 5, "phase": "running:healthy" },
            "level": "standby", "level_applied": true, "role": "BACKUP",
            "role_current": true, "released": true,
            "maintenance": { "reason": "ticket 4711", "uid": 1000, "since": 1_795_367_321 },
            "proxy": {
                "command": "traefik --configfile local/traefik.yml --token=s3cret",
                "pid": 815, "uptime_seconds": 4, "restarts": 0, "last_exit": null,
                "rss_bytes": null, "cpu_seconds": null
            },
            "health": {
                "check": "exec /bin/check --key k3y", "rise": 2, "fall": 3,
                "healthy": false, "passes": 0, "failures": 1,
                "last_error": "`/bin/check --key k3y` exited 1", "last_at": 1_795_367_322
            },
            "backend": { "name": "none", "failures": 0, "details": null },
            "consul": {
                "address": "https://u:p4ss@127.0.0.1:8501", "service": "edge",
                "service_id": "edge-a", "registered": false, "tag": null, "check": null,
                "last_ok": null, "last_error": "register: GET https://127.0.0.1:8501/v1?token=t0ken failed",
                "errors": 1, "instances": [], "masters": [], "split_brain": false
            }
        }))
        .unwrap()
    }

    #[test]
    fn for_http_hides_argv_values_url_secrets_and_the_reason_and_nothing_else() {
        let whole = status();
        let shown = for_http(whole.clone(), false);
        let text = serde_json::to_string(&shown).unwrap();
        for secret in [
            "s3cret",
            "local/traefik.yml",
            "k3y",
            "p4ss",
            "t0ken",
            "4711",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            shown.proxy.command,
            "traefik --configfile [redacted] --token=[redacted]"
        );
        let health = shown.health.as_ref().unwrap();
        assert_eq!(health.check, "exec /bin/check --key [redacted]");
        assert_eq!(
            health.view.last_error.as_deref(),
            Some("`/bin/check --key [redacted]` exited 1")
        );
        let maintenance = shown.maintenance.as_ref().unwrap();
        assert_eq!(maintenance.reason.as_str(), "[redacted]");
        assert_eq!(maintenance.since, 1_795_367_321);
        assert_eq!(maintenance.uid, 1000);
        let consul = shown.consul.as_ref().unwrap();
        assert_eq!(consul.address, "https://[redacted]@127.0.0.1:8501");
        // Everything else as the snapshot has it.
        let mut back = shown.clone();
        back.proxy.command.clone_from(&whole.proxy.command);
        back.health.clone_from(&whole.health);
        back.maintenance.clone_from(&whole.maintenance);
        back.consul.clone_from(&whole.consul);
        assert_eq!(back, whole);
        // show_argv shows the command lines; URLs and the reason stay hidden.
        let shown = for_http(whole.clone(), true);
        assert_eq!(shown.proxy.command, whole.proxy.command);
        let health = shown.health.as_ref().unwrap();
        assert_eq!(health, whole.health.as_ref().unwrap());
        assert_eq!(shown.maintenance.unwrap().reason.as_str(), "[redacted]");
        assert_eq!(
            shown.consul.unwrap().last_error.as_deref(),
            Some("register: GET https://127.0.0.1:8501/v1?[redacted] failed")
        );
    }
}
