//! OpenBSD routing socket messages (route(4)), parsed from bytes: the carp
//! watch in the bsd module reads them from a PF_ROUTE socket, and this
//! parser is compiled on every OS so that its tests run on Linux.
//!
//! Owns: the few header fields handoff reads and the meaning of a carp
//! interface's link state. Does not own: the socket, or the role (the CARP
//! backend still asks ifconfig(8) on every hint; a message only says when).
//!
//! Layouts, from OpenBSD's sys/net/route.h (1.218) and sys/net/if.h (1.221),
//! on amd64 (LP64, little-endian, as every 64-bit OpenBSD port lays them out
//! but for the byte order, which is the host's):
//!
//! ```text
//! every message begins    u_short rtm_msglen    @0   length of the whole message
//!   (struct rt_msghdr)    u_char  rtm_version   @2   RTM_VERSION, 5
//!                         u_char  rtm_type      @3   RTM_IFINFO 0xe, RTM_DESYNC 0x10
//! struct if_msghdr        u_short ifm_hdrlen    @4   sizeof(struct if_msghdr), 168
//!   (RTM_IFINFO)          u_short ifm_index     @6   the interface's index
//!                         u_short ifm_tableid   @8
//!                         u_char  ifm_pad1, ifm_pad2 @10, @11
//!                         int     ifm_addrs, ifm_flags, ifm_xflags @12, @16, @20
//!                         struct if_data ifm_data @24 (aligned to 8: u_int64_t members)
//! struct if_data          u_char  ifi_type, ifi_addrlen, ifi_hdrlen @24, @25, @26
//!                         u_char  ifi_link_state @27
//!                         ... counters, ifi_lastchange: 144 bytes in all
//! ```
//!
//! rtm_ifchg() in sys/net/rtsock.c (1.388) sends RTM_IFINFO with the
//! interface's `if_data` on every link state change (if_link_state_change),
//! followed by the interface's sockaddr_dl (RTA_IFP). A carp interface's
//! link state is set by carp_set_state() in sys/netinet/ip_carp.c (1.370):
//! LINK_STATE_INVALID to begin with, LINK_STATE_UP if any vhid is MASTER,
//! else LINK_STATE_DOWN if any is BACKUP (so every vhid in INIT leaves it
//! INVALID). if.h's LINK_STATE_DESCRIPTIONS names them for IFT_CARP ("master",
//! "backup"), and sasyncd(8) (usr.sbin/sasyncd/carp.c, carp_map_state) reads
//! UP, HALF_DUPLEX and FULL_DUPLEX as MASTER, DOWN as BACKUP, and UNKNOWN
//! and INVALID as INIT.
//!
//! Untested on a real host: there are no recorded routing-socket messages;
//! the tests build them from the layouts above, and the bsd module checks
//! the offsets against the libc crate's `if_msghdr` when it is compiled for
//! OpenBSD (scripts/check-openbsd).

/// `RTM_VERSION` (route.h): messages of another version are not read.
pub const RTM_VERSION: u8 = 5;
/// `RTM_IFINFO` (route.h): an interface's flags or link state changed.
pub const RTM_IFINFO: u8 = 0x0e;
/// `RTM_DESYNC` (route.h): the socket's buffer overflowed and messages were
/// lost; it cannot be filtered out (rtsock.c, route_input).
pub const RTM_DESYNC: u8 = 0x10;
/// `RTM_MAXSIZE` (route.h): the longest routing message.
pub const RTM_MAXSIZE: usize = 2048;
/// Offset of `ifm_index` in `struct if_msghdr`.
pub const IFM_INDEX_AT: usize = 6;
/// Offset of `ifm_data` in `struct if_msghdr`.
pub const IFM_DATA_AT: usize = 24;
/// Offset of `ifi_link_state` in `struct if_data`.
pub const IFI_LINK_STATE_AT: usize = 3;

/// `LINK_STATE_*` (if.h).
const LINK_STATE_UNKNOWN: u8 = 0;
const LINK_STATE_INVALID: u8 = 1;
const LINK_STATE_DOWN: u8 = 2;
const LINK_STATE_UP: u8 = 4;
const LINK_STATE_FULL_DUPLEX: u8 = 6;

/// A routing message, as far as handoff reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// RTM_IFINFO.
    IfInfo {
        /// `ifm_index`.
        index: u16,
        /// `ifm_data.ifi_link_state`.
        link_state: u8,
    },
    /// RTM_DESYNC: messages were lost.
    Desync,
    /// Any other type (`rtm_type`).
    Other(u8),
}

/// A message handoff cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the fields read.
    #[error("routing message of {0} bytes is too short")]
    Short(usize),
    /// Not RTM_VERSION.
    #[error("routing message version {0}, expected {RTM_VERSION}")]
    Version(u8),
    /// `rtm_msglen` disagrees with what was read.
    #[error("routing message says {said} bytes but {read} were read")]
    Length {
        /// `rtm_msglen`.
        said: usize,
        /// Bytes read.
        read: usize,
    },
}

/// Parses one message (a read(2) from a routing socket returns one).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let [l0, l1, version, kind] = *bytes
        .first_chunk::<4>()
        .ok_or(ParseError::Short(bytes.len()))?;
    if version != RTM_VERSION {
        return Err(ParseError::Version(version));
    }
    let said = usize::from(u16::from_ne_bytes([l0, l1]));
    if said < 4 || said > bytes.len() {
        return Err(ParseError::Length {
            said,
            read: bytes.len(),
        });
    }
    let message = &bytes[..said];
    match kind {
        RTM_IFINFO => {
            let short = || ParseError::Short(message.len());
            let index = message
                .get(IFM_INDEX_AT..IFM_INDEX_AT + 2)
                .ok_or_else(short)?;
            let link_state = *message
                .get(IFM_DATA_AT + IFI_LINK_STATE_AT)
                .ok_or_else(short)?;
            Ok(Message::IfInfo {
                index: u16::from_ne_bytes([index[0], index[1]]),
                link_state,
            })
        }
        RTM_DESYNC => Ok(Message::Desync),
        other => Ok(Message::Other(other)),
    }
}

/// What a carp interface's link state says of its vhids (carp_set_state,
/// read as sasyncd reads it), for the log; ifconfig(8) stays the judge.
pub fn carp_state(link_state: u8) -> &'static str {
    match link_state {
        LINK_STATE_UP..=LINK_STATE_FULL_DUPLEX => "MASTER",
        LINK_STATE_DOWN => "BACKUP",
        LINK_STATE_UNKNOWN | LINK_STATE_INVALID => "INIT",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sizeof(struct if_msghdr)` on amd64: 24 bytes of header, then the
    /// 144-byte `struct if_data`.
    const IF_MSGHDR: usize = 168;
    /// What rtm_ifchg appends: a sockaddr_dl (RTA_IFP), here of 32 bytes.
    const SOCKADDR_DL: usize = 32;

    /// An RTM_IFINFO as rtm_ifchg builds it for a carp interface.
    fn ifinfo(index: u16, link_state: u8) -> Vec<u8> {
        let len = IF_MSGHDR + SOCKADDR_DL;
        let mut m = vec![0u8; len];
        m[0..2].copy_from_slice(&u16::try_from(len).unwrap().to_ne_bytes()); // ifm_msglen
        m[2] = RTM_VERSION; // ifm_version
        m[3] = RTM_IFINFO; // ifm_type
        m[4..6].copy_from_slice(&u16::try_from(IF_MSGHDR).unwrap().to_ne_bytes()); // ifm_hdrlen
        m[6..8].copy_from_slice(&index.to_ne_bytes()); // ifm_index
        m[12..16].copy_from_slice(&0x10i32.to_ne_bytes()); // ifm_addrs: RTA_IFP
        m[16..20].copy_from_slice(&0x8843i32.to_ne_bytes()); // ifm_flags: UP|BROADCAST|RUNNING|SIMPLEX|MULTICAST
        m[24] = 0xf7; // ifi_type: IFT_CARP (if_types.h)
        m[25] = 6; // ifi_addrlen
        m[26] = 14; // ifi_hdrlen
        m[27] = link_state; // ifi_link_state
        m[28..32].copy_from_slice(&1500u32.to_ne_bytes()); // ifi_mtu
        m[IF_MSGHDR] = 32; // sdl_len
        m[IF_MSGHDR + 1] = 18; // sdl_family: AF_LINK
        m
    }

    /// An RTM_DESYNC as rtm_msg1 builds it: a bare `struct rt_msghdr`.
    fn desync() -> Vec<u8> {
        let len: u16 = 96; // sizeof(struct rt_msghdr) on amd64
        let mut m = vec![0u8; usize::from(len)];
        m[0..2].copy_from_slice(&len.to_ne_bytes());
        m[2] = RTM_VERSION;
        m[3] = RTM_DESYNC;
        m
    }

    #[test]
    fn ifinfo_gives_the_index_and_link_state() {
        for (state, carp) in [(1, "INIT"), (2, "BACKUP"), (4, "MASTER")] {
            let message = parse(&ifinfo(7, state)).unwrap();
            assert_eq!(
                message,
                Message::IfInfo {
                    index: 7,
                    link_state: state
                }
            );
            assert_eq!(carp_state(state), carp);
        }
        assert_eq!(carp_state(0), "INIT");
        assert_eq!(carp_state(5), "MASTER");
        assert_eq!(carp_state(6), "MASTER");
        assert_eq!(carp_state(3), "unknown", "LINK_STATE_KALIVE_DOWN");
    }

    #[test]
    fn desync_and_other_types() {
        assert_eq!(parse(&desync()).unwrap(), Message::Desync);
        let mut add = desync();
        add[3] = 0x1; // RTM_ADD
        assert_eq!(parse(&add).unwrap(), Message::Other(1));
    }

    #[test]
    fn short_foreign_or_inconsistent_messages_are_errors() {
        let whole = ifinfo(7, 4);
        assert_eq!(parse(&whole[..3]), Err(ParseError::Short(3)));
        let mut old = whole.clone();
        old[2] = 4;
        assert_eq!(parse(&old), Err(ParseError::Version(4)));
        assert_eq!(
            parse(&whole[..100]),
            Err(ParseError::Length {
                said: 200,
                read: 100
            }),
            "a message cut short"
        );
        // A message whose own length stops before ifi_link_state.
        let mut short = whole.clone();
        short[0..2].copy_from_slice(&20u16.to_ne_bytes());
        assert_eq!(parse(&short), Err(ParseError::Short(20)));
        let mut zero = whole;
        zero[0..2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(matches!(
            parse(&zero),
            Err(ParseError::Length { said: 0, .. })
        ));
    }
}
