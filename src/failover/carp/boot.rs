//! This boot's identity, for the CARP [`ledger`](super::ledger): the content
//! of a *boot marker*, a file that every reboot removes and nothing else
//! touches (`[failover.carp] boot_marker`).
//!
//! Owns: reading the marker, and creating it with a random id when it is
//! missing, so that every process that asks during one boot gets the same id.
//! Does not own what a changed id means (that a ledger is from an earlier
//! boot: `super::CarpBackend::open`), nor where the marker lives by default
//! (`crate::platform::DEFAULT_BOOT_MARKER`: a file in /var/run on OpenBSD,
//! which /etc/rc empties at boot; the kernel's own boot id on Linux).
//!
//! Why not the boot time: OpenBSD rewrites `kern.boottime` whenever the clock
//! is set (`date`, `rdate`, `ntpd -s`, a resume), so a ledger keyed on it
//! would be taken for an earlier boot after a mere clock step, and our share
//! added a second time. Why not the uptime alone: a reboot can be followed by
//! a start at a higher uptime than the ledger's last write. The marker is
//! right in both directions; the uptime is kept only as a second check that
//! can prove a reboot (`super::CarpBackend::open`).

use std::{
    fs::{self, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Bytes of randomness in a new id (128 bits: two boots never share one).
const ID_BYTES: usize = 16;
/// Longest content taken as an id; anything longer is not a marker.
const MAX_ID: usize = 128;

/// This boot's id: the marker's content, or a new random id that the marker
/// is created with. Two processes creating it at once agree: the marker is
/// put in place with link(2), which fails if it exists, and the loser reads
/// the winner's. The marker is written whole before it appears, so a reader
/// never sees it half written.
pub fn id(marker: &Path) -> io::Result<String> {
    if let Some(id) = read(marker)? {
        return Ok(id);
    }
    let fresh = random_id()?;
    // The temp name has no leading dot, so that a reboot's cleanup of the
    // directory (`rm -rf -- *` in OpenBSD's /etc/rc) removes one left by a
    // crash here too; part of the new id makes it unique to this attempt.
    let name = marker
        .file_name()
        .ok_or_else(|| context(marker, io::Error::other("not a file name")))?;
    let temp = marker.with_file_name(format!(
        "{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        &fresh[..8]
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut file| writeln!(file, "{fresh}"));
    // No fsync: a crash of the machine is a reboot, which removes the marker
    // anyway; a crash of handoff leaves the page cache intact.
    let linked = written.map(|()| fs::hard_link(&temp, marker));
    let _ = fs::remove_file(&temp);
    match linked.map_err(|e| context(marker, e))? {
        Ok(()) => Ok(fresh),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(marker)?.ok_or_else(|| {
            context(
                marker,
                io::Error::other("vanished right after another process created it"),
            )
        }),
        Err(e) => Err(context(marker, e)),
    }
}

/// The marker's id, or `None` if there is no marker. An empty or oversized
/// one is an error: it was not written by handoff (nor by the kernel), and
/// guessing could take an earlier boot's ledger for this one's.
fn read(marker: &Path) -> io::Result<Option<String>> {
    let mut text = String::new();
    match fs::File::open(marker).and_then(|f| f.take(MAX_ID as u64 + 2).read_to_string(&mut text)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(marker, e)),
    }
    let id = text.trim();
    if id.is_empty() || id.len() > MAX_ID || id.contains(char::is_whitespace) {
        return Err(context(
            marker,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a boot marker (one id on one line expected); once removed, the next start \
                 counts our CARP share as not applied and adds it again",
            ),
        ));
    }
    Ok(Some(id.to_owned()))
}

/// A new id: hex of random bytes from the kernel.
fn random_id() -> io::Result<String> {
    crate::files::random_hex(ID_BYTES).map_err(|e| context(Path::new("/dev/urandom"), e))
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(|e| context(path, e))`
fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("boot marker {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_use_creates_the_marker_and_later_ones_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("handoff.boot");
        let first = id(&marker).unwrap();
        assert_eq!(first.len(), 2 * ID_BYTES);
        assert_eq!(id(&marker).unwrap(), first);
        assert_eq!(fs::read_to_string(&marker).unwrap(), format!("{first}\n"));
        // Only the marker is left: no temp file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_reboot_that_empties_the_directory_gives_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("handoff.boot");
        let before = id(&marker).unwrap();
        fs::remove_file(&marker).unwrap();
        assert_ne!(id(&marker).unwrap(), before);
    }

    #[test]
    fn racers_agree_on_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("handoff.boot");
        for _ in 0..20 {
            let _ = fs::remove_file(&marker);
            let ids: Vec<String> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..8).map(|_| s.spawn(|| id(&marker).unwrap())).collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        }
    }

    #[test]
    fn the_kernels_id_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("boot_id");
        fs::write(&marker, "0b5c6f3e-8c1a-4c55-9d7e-2f0a1b2c3d4e\n").unwrap();
        assert_eq!(id(&marker).unwrap(), "0b5c6f3e-8c1a-4c55-9d7e-2f0a1b2c3d4e");
    }

    #[test]
    fn a_damaged_marker_or_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("handoff.boot");
        fs::write(&marker, "").unwrap();
        let err = id(&marker).unwrap_err().to_string();
        assert!(err.contains("not a boot marker"), "{err}");
        fs::write(&marker, "two words\n").unwrap();
        assert!(id(&marker).is_err());
        let err = id(&dir.path().join("gone/handoff.boot"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gone/handoff.boot"), "{err}");
    }
}
