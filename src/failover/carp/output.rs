//! Parsing OpenBSD ifconfig(8) output for CARP: never a guess. Anything that
//! is not in one of the known formats is an error that quotes the line.
//!
//! Formats, from `sbin/ifconfig/ifconfig.c` (`carp_status()`,
//! `printgroupattribs()`), recorded in `tests/data/openbsd/`:
//! * `ifconfig -g <group>`: `<group>: carp demote count <N>` (N in 0..=255);
//! * one vhid: `\tcarp: <INIT|BACKUP|MASTER> carpdev <if> vhid <n> advbase <n> advskew <n>[ carppeer <addr>]`;
//! * several vhids (balancing): `\tcarp: carpdev <if> advbase <n> balancing <mode>[ carppeer <addr>]`,
//!   then one `\t\tstate <STATE> vhid <n> advskew <n>` line per vhid.

use crate::failover::Role;

/// A carp interface's state for one vhid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhidState {
    /// Not participating (interface down, no carpdev link).
    Init,
    /// Another node is master for this vhid.
    Backup,
    /// This node is master for this vhid.
    Master,
}

/// What `ifconfig carpN` says about CARP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarpInterface {
    /// Interface name, e.g. `carp0`.
    pub name: String,
    /// `(vhid, state)` for each vhid, in the order printed.
    pub vhids: Vec<(u8, VhidState)>,
}

impl CarpInterface {
    /// MASTER if any vhid is MASTER (balancing: this node serves part of the
    /// address); BACKUP if any is BACKUP; FAULT when every vhid is INIT.
    pub fn role(&self) -> Role {
        let has = |s| self.vhids.iter().any(|(_, state)| *state == s);
        if has(VhidState::Master) {
            Role::Master
        } else if has(VhidState::Backup) {
            Role::Backup
        } else {
            Role::Fault
        }
    }
}

/// Output that is not in a known format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected ifconfig output: {what}: {line:?}")]
pub struct ParseError {
    /// What was expected.
    pub what: &'static str,
    /// The offending line (or the whole output when no line fits).
    pub line: String,
}

fn error(what: &'static str, line: &str) -> ParseError {
    ParseError {
        what,
        line: line.to_owned(),
    }
}

/// The demote counter from `ifconfig -g <group>`.
pub fn demote_count(group: &str, output: &str) -> Result<u8, ParseError> {
    let line = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let expected = "`<group>: carp demote count <0..255>`";
    let rest = line
        .strip_prefix(group)
        .and_then(|r| r.strip_prefix(": carp demote count "))
        .ok_or_else(|| error(expected, line))?;
    rest.trim().parse::<u8>().map_err(|_| error(expected, line))
}

/// The interface groups in `ifconfig <interface>` output
/// (`\tgroups: carp edge`); none when the line is missing.
pub fn groups(output: &str) -> Vec<&str> {
    output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("groups:"))
        .map(|rest| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The CARP state of the interface in `ifconfig <carpN>` output.
pub fn interface(output: &str) -> Result<CarpInterface, ParseError> {
    let mut lines = output.lines();
    let first = lines.next().unwrap_or("");
    let name = first
        .split_once(": flags=")
        .map(|(name, _)| name)
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .ok_or_else(|| error("`<interface>: flags=...` on the first line", first))?;
    let mut vhids = Vec::new();
    let mut balancing = false;
    let mut seen_carp = false;
    for line in lines {
        let trimmed = line.trim_start_matches('\t');
        let depth = line.len() - trimmed.len();
        if depth == 1 {
            balancing = false;
        }
        if let Some(carp) = trimmed.strip_prefix("carp: ") {
            if depth != 1 || seen_carp {
                return Err(error("one `\\tcarp:` line", line));
            }
            seen_carp = true;
            let words: Vec<&str> = carp.split_whitespace().collect();
            if words.first() == Some(&"carpdev") {
                // Several vhids follow, one `state` line each.
                if !words.contains(&"balancing") {
                    return Err(error("`carp: carpdev ... balancing <mode>`", line));
                }
                balancing = true;
            } else {
                let state = vhid_state(words.first().copied().unwrap_or(""), line)?;
                vhids.push((field(&words, "vhid", line)?, state));
            }
        } else if let Some(state_line) = trimmed.strip_prefix("state ") {
            if depth != 2 || !balancing {
                return Err(error(
                    "`\\t\\tstate` only under a balancing `carp:` line",
                    line,
                ));
            }
            let words: Vec<&str> = std::iter::once("state")
                .chain(state_line.split_whitespace())
                .collect();
            let state = vhid_state(words.get(1).copied().unwrap_or(""), line)?;
            vhids.push((field(&words, "vhid", line)?, state));
        }
    }
    if vhids.is_empty() {
        return Err(error(
            "a carp interface (a `carp:` line with at least one vhid)",
            output.trim_end(),
        ));
    }
    Ok(CarpInterface {
        name: name.to_owned(),
        vhids,
    })
}

fn vhid_state(word: &str, line: &str) -> Result<VhidState, ParseError> {
    match word {
        "INIT" => Ok(VhidState::Init),
        "BACKUP" => Ok(VhidState::Backup),
        "MASTER" => Ok(VhidState::Master),
        _ => Err(error("a state of INIT, BACKUP or MASTER", line)),
    }
}

/// The number after `key` in `words` (vhid: 1..=255).
fn field(words: &[&str], key: &str, line: &str) -> Result<u8, ParseError> {
    words
        .iter()
        .position(|w| *w == key)
        .and_then(|i| words.get(i + 1))
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| error("`vhid <1..255>`", line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/openbsd/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// (fixture, interface, vhids, role)
    type Row<'a> = (&'a str, &'a str, &'a [(u8, VhidState)], Role);

    #[test]
    fn every_recorded_format() {
        use VhidState::*;
        let table: &[Row] = &[
            (
                "ifconfig-carp0-master.txt",
                "carp0",
                &[(1, Master)],
                Role::Master,
            ),
            (
                "ifconfig-carp0-backup.txt",
                "carp0",
                &[(1, Backup)],
                Role::Backup,
            ),
            (
                "ifconfig-carp0-init.txt",
                "carp0",
                &[(1, Init)],
                Role::Fault,
            ),
            (
                "ifconfig-carp1-master-unicast.txt",
                "carp1",
                &[(2, Master)],
                Role::Master,
            ),
            (
                "ifconfig-carp2-balancing.txt",
                "carp2",
                &[(3, Master), (4, Backup)],
                Role::Master,
            ),
        ];
        for (file, name, vhids, role) in table {
            let parsed = interface(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(parsed.name, *name, "{file}");
            assert_eq!(parsed.vhids, *vhids, "{file}");
            assert_eq!(parsed.role(), *role, "{file}");
        }
    }

    #[test]
    fn interface_groups() {
        assert_eq!(
            groups(&fixture("ifconfig-carp0-master.txt")),
            ["carp", "edge"]
        );
        assert!(groups("carp0: flags=0<>\n").is_empty());
    }

    #[test]
    fn group_counters() {
        assert_eq!(
            demote_count("carp", &fixture("ifconfig-g-carp-boot.txt")),
            Ok(128)
        );
        assert_eq!(
            demote_count("edge", &fixture("ifconfig-g-edge-0.txt")),
            Ok(0)
        );
        assert_eq!(
            demote_count("edge", "edge: carp demote count 255\n"),
            Ok(255)
        );
    }

    #[test]
    fn malformed_output_is_an_error_never_a_guess() {
        let bad_groups = [
            ("edge", ""),
            ("edge", "carp: carp demote count 0\n"), // another group
            ("edge", "edge: carp demote count 256\n"), // out of range
            ("edge", "edge: carp demote count -1\n"),
            ("edge", "edge: carp demote count\n"),
            ("edge", "ifconfig: edge: no such group\n"),
        ];
        for (group, text) in bad_groups {
            assert!(demote_count(group, text).is_err(), "{text:?}");
        }
        let master = fixture("ifconfig-carp0-master.txt");
        let bad_interfaces = [
            String::new(),
            "em0: flags=8843<UP> mtu 1500\n\tinet 10.0.0.1\n".to_string(), // not carp
            master.replace("MASTER carpdev", "WEIRD carpdev"),
            master.replace("vhid 1 ", "vhid x "),
            master.replace("vhid 1 ", "vhid 0 "),
            master.replace("carp0: flags", "flags"),
            master.replace("\tcarp:", "\t\tcarp:"),
            fixture("ifconfig-carp2-balancing.txt").replace("balancing ip", ""),
            fixture("ifconfig-carp2-balancing.txt").replace("\t\tstate BACKUP", "\tstate BACKUP"),
            format!("{master}\tcarp: MASTER carpdev em1 vhid 9 advbase 1 advskew 0\n"),
        ];
        for text in &bad_interfaces {
            let err = interface(text).expect_err(text);
            assert!(
                err.to_string().starts_with("unexpected ifconfig output"),
                "{err}"
            );
        }
    }

    mod random {
        //! F10: the parser never panics on any text, reads back every
        //! counter it is given, and a recorded output cut short or with
        //! its state word changed is either an error or read exactly.

        use proptest::prelude::*;

        use super::{VhidState, demote_count, fixture, interface};

        proptest! {
            #[test]
            fn any_text_is_parsed_or_refused_without_panic(text in "\\PC{0,300}", group in "[a-z]{1,8}") {
                let _ = interface(&text);
                let _ = demote_count(&group, &text);
            }

            #[test]
            fn every_counter_reads_back(count in 0u8..=255, group in "[a-z][a-z0-9]{0,14}") {
                let text = format!("{group}: carp demote count {count}\n");
                prop_assert_eq!(demote_count(&group, &text).unwrap(), count);
            }

            #[test]
            fn truncated_or_altered_outputs_are_never_misread(
                which in 0usize..4,
                cut in 0usize..400,
                state in prop::sample::select(vec!["MASTER", "BACKUP", "INIT", "MASTR", "", "master"]),
            ) {
                let names = [
                    "ifconfig-carp0-master.txt",
                    "ifconfig-carp0-backup.txt",
                    "ifconfig-carp0-init.txt",
                    "ifconfig-carp1-master-unicast.txt",
                ];
                let full = fixture(names[which]);
                let cut_at = (0..=cut.min(full.len())).rev().find(|&i| full.is_char_boundary(i)).unwrap_or(0);
                if let Ok(parsed) = interface(&full[..cut_at]) {
                    prop_assert_eq!(parsed, interface(&full).unwrap());
                }
                let altered = ["MASTER", "BACKUP", "INIT"]
                    .iter()
                    .fold(full.clone(), |text, word| text.replace(&format!("carp: {word} "), &format!("carp: {state} ")));
                match (interface(&altered), state) {
                    (Ok(parsed), "MASTER") => prop_assert_eq!(&parsed.vhids[..], &[(parsed.vhids[0].0, VhidState::Master)][..]),
                    (Ok(parsed), "BACKUP") => prop_assert_eq!(&parsed.vhids[..], &[(parsed.vhids[0].0, VhidState::Backup)][..]),
                    (Ok(parsed), "INIT") => prop_assert_eq!(&parsed.vhids[..], &[(parsed.vhids[0].0, VhidState::Init)][..]),
                    (Ok(parsed), other) => prop_assert!(false, "{other:?} read as {parsed:?}"),
                    (Err(_), _) => {}
                }
            }
        }
    }
}
