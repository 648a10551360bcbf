//! The packages' layouts, checked against the files they ship: the Debian
//! package's (Cargo.toml, `[package.metadata.deb]`, built by
//! scripts/package) puts the binary where the unit, the Nomad job and
//! keepalived's process tracking name it, the config where the binary reads
//! it by default, and every asset it lists exists; its maintainer scripts
//! parse. The OpenBSD port skeleton (packaging/openbsd) installs the rc.d
//! script the repository ships, and its PLIST names files that exist.
//! Building, linting, installing and purging the .deb is
//! scripts/check-package's (run by scripts/test, as root).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;

use common::{HANDOFF, output, repo};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The repository files `pattern` names: a path, or a path whose last
/// part has one `*`.
fn matches(pattern: &str) -> Vec<String> {
    let Some((head, tail)) = pattern.split_once('*') else {
        return if repo(pattern).is_file() {
            vec![pattern.to_owned()]
        } else {
            Vec::new()
        };
    };
    let (dir, prefix) = head.rsplit_once('/').unwrap_or((".", head));
    let mut found: Vec<String> = std::fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix) && name.ends_with(tail))
        .map(|name| format!("{dir}/{name}"))
        .filter(|path| repo(path).is_file())
        .collect();
    found.sort();
    found
}

/// `[package.metadata.deb] assets`: (source, where it is installed, mode),
/// the destination as an absolute path (a destination ending in `/` takes
/// the source's file name).
fn deb_assets() -> Vec<(String, String, String)> {
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let assets = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let mut installed = Vec::new();
    for asset in assets {
        let [source, dest, mode] = asset
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        // cargo-deb builds the binary; everything else must be here.
        let sources = if source.starts_with("target/release/") {
            vec![source.clone()]
        } else {
            matches(&source)
        };
        assert!(
            !sources.is_empty(),
            "the package lists {source}, which does not exist"
        );
        for source in sources {
            let name = Path::new(&source).file_name().unwrap().to_string_lossy();
            let to = if dest.ends_with('/') {
                format!("/{dest}{name}")
            } else {
                format!("/{dest}")
            };
            installed.push((source, to, mode.clone()));
        }
    }
    installed
}

fn installed_as(assets: &[(String, String, String)], source: &str) -> String {
    assets.iter().find(|(s, _, _)| s == source).map_or_else(
        || panic!("the package does not install {source}"),
        |(_, to, _)| to.clone(),
    )
}

#[test]
fn the_deb_puts_the_binary_where_every_linux_start_names_it() {
    let assets = deb_assets();
    let binary = installed_as(&assets, "target/release/handoff");
    assert_eq!(binary, "/usr/bin/handoff");
    let unit = read("systemd/handoff.service");
    for line in ["ExecStartPre=", "ExecStart=", "ExecReload="] {
        let value = unit
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in the unit"));
        assert!(value.starts_with(&format!("{binary} ")), "{line}{value}");
    }
    assert!(
        read("config/nomad/edge-proxy.nomad.hcl").contains(&format!("command = \"{binary}\"")),
        "the Nomad job runs another binary"
    );
    for conf in ["config/keepalived.conf", "config/keepalived-fast.conf"] {
        assert!(
            read(conf)
                .lines()
                .any(|l| l.trim() == format!("process {binary} run")),
            "{conf}: vrrp_track_process does not match {binary} run"
        );
    }
    // No Linux file names another place.
    for file in [
        "systemd/handoff.service",
        "config/nomad/edge-proxy.nomad.hcl",
        "config/keepalived.conf",
        "config/keepalived-fast.conf",
    ] {
        assert!(
            !read(file).contains("/usr/local/bin/handoff"),
            "{file} names /usr/local/bin/handoff"
        );
    }
}

#[test]
fn the_deb_installs_the_unit_man_pages_config_and_examples() {
    let assets = deb_assets();
    let (code, help, _) = output(std::process::Command::new(HANDOFF).arg("--help"));
    assert_eq!(code, 0);
    assert!(help.contains("else /etc/handoff.toml]"), "{help}");
    for (source, to) in [
        ("config/handoff.toml", "/etc/handoff.toml"),
        (
            "systemd/handoff.service",
            "/lib/systemd/system/handoff.service",
        ),
        ("docs/handoff.8", "/usr/share/man/man8/handoff.8"),
        ("docs/handoff.toml.5", "/usr/share/man/man5/handoff.toml.5"),
        (
            "config/keepalived.conf",
            "/usr/share/doc/handoff/examples/keepalived/keepalived.conf",
        ),
        (
            "config/prometheus/handoff.rules.yml",
            "/usr/share/doc/handoff/examples/prometheus/handoff.rules.yml",
        ),
        (
            "config/grafana/handoff.json",
            "/usr/share/doc/handoff/examples/grafana/handoff.json",
        ),
    ] {
        assert_eq!(installed_as(&assets, source), to, "{source}");
    }
    // Every example config, under the examples directory.
    for example in matches("config/examples/*.toml") {
        let name = Path::new(&example).file_name().unwrap().to_string_lossy();
        assert_eq!(
            installed_as(&assets, &example),
            format!("/usr/share/doc/handoff/examples/{name}")
        );
    }
    // The maintainer scripts are POSIX sh that parses, and the postrm
    // purges the state directory the postinst creates.
    for script in ["postinst", "postrm"] {
        let path = repo(&format!("packaging/debian/{script}"));
        let (code, _, err) = output(std::process::Command::new("sh").arg("-n").arg(&path));
        assert_eq!(code, 0, "{script}: {err}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
    assert!(read("packaging/debian/postinst").contains("install -d -m 0750 /var/lib/handoff"));
    assert!(read("packaging/debian/postrm").contains("rm -rf /var/lib/handoff /run/handoff"));
    // The unit's state directory is the same one, with the same mode.
    let unit = read("systemd/handoff.service");
    assert!(unit.lines().any(|l| l == "StateDirectory=handoff"));
    assert!(unit.lines().any(|l| l == "StateDirectoryMode=0750"));
}

#[test]
fn the_openbsd_port_installs_the_shipped_rc_script_and_existing_files() {
    let rc = read("rc.d/handoff");
    let port_rc = read("packaging/openbsd/pkg/handoff.rc");
    assert_eq!(
        port_rc,
        rc.replace(
            "daemon=\"/usr/local/bin/handoff\"",
            "daemon=\"${TRUEPREFIX}/bin/handoff\""
        ),
        "pkg/handoff.rc differs from rc.d/handoff in more than the binary's path"
    );
    assert_ne!(
        port_rc, rc,
        "rc.d/handoff no longer names /usr/local/bin/handoff"
    );
    let plist = read("packaging/openbsd/pkg/PLIST");
    for want in [
        "@rcscript ${RCDIR}/handoff",
        "@bin bin/handoff",
        "@man man/man8/handoff.8",
        "@man man/man5/handoff.toml.5",
        "@sample ${SYSCONFDIR}/handoff.toml",
    ] {
        assert!(plist.lines().any(|l| l == want), "PLIST lacks {want}");
    }
    let makefile = read("packaging/openbsd/Makefile");
    assert!(makefile.contains("MODCARGO_INSTALL_ARGS =\t--bin handoff"));
    // Each file the PLIST names is one the Makefile's post-install copies
    // from the source tree.
    for line in plist
        .lines()
        .filter(|l| !l.starts_with('@') && !l.ends_with('/'))
    {
        let name = Path::new(line).file_name().unwrap().to_string_lossy();
        let sources: Vec<String> = [
            format!("config/examples/{name}"),
            format!("config/openbsd/{name}"),
            format!("config/{name}"),
            format!("docs/{name}"),
            name.to_string(),
        ]
        .into_iter()
        .filter(|s| repo(s).is_file())
        .collect();
        assert!(
            !sources.is_empty(),
            "PLIST names {line}, which no source file is"
        );
        let copied = makefile.contains(&format!("/{name} "))
            || (repo(&format!("config/examples/{name}")).is_file()
                && makefile.contains("${WRKSRC}/config/examples/*.toml "));
        assert!(copied, "the Makefile never installs {name}");
    }
}
