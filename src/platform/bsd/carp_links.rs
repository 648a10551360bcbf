//! carp(4) link states from the routing socket (route(4)): the CARP backend
//! looks at its interfaces the moment the kernel announces a change (as
//! ifstated(8) and sasyncd(8) learn of them) rather than at its next poll.
//!
//! Owns: the PF_ROUTE socket and its reader task. The messages are parsed by
//! [`super::super::route_msg`], which says where each field comes from. Only
//! socket calls that nix and libc offer on Linux too are used, so that the
//! `--cfg handoff_portable` build compiles and lints this file on Linux,
//! where AF_ROUTE is AF_NETLINK: there the socket opens but, joined to no
//! group, never hears anything. Untested on a real OpenBSD host.

use std::{io, os::fd::OwnedFd};

use nix::{
    libc,
    net::if_::if_indextoname,
    setsockopt_impl, sockopt_impl,
    sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket},
};
use tokio::io::{Interest, unix::AsyncFd};

use super::super::route_msg::{self, Message};

/// `ROUTE_MSGFILTER` (sys/net/route.h): a setsockopt(2) at level AF_ROUTE
/// taking an unsigned int, the bitmask `1 << rtm_type` of the types to
/// receive (sys/net/rtsock.c, route_ctloutput and route_input).
const ROUTE_MSGFILTER: libc::c_int = 1;

sockopt_impl!(
    /// route(4)'s message filter.
    RouteMsgFilter,
    SetOnly,
    libc::AF_ROUTE,
    ROUTE_MSGFILTER,
    libc::c_uint
);

// The parser's offsets are those of the libc crate's OpenBSD structs, which
// are generated from OpenBSD's headers: checked wherever this compiles for
// OpenBSD (scripts/check-openbsd).
#[cfg(target_os = "openbsd")]
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(libc::if_msghdr, ifm_index) == route_msg::IFM_INDEX_AT);
    assert!(offset_of!(libc::if_msghdr, ifm_data) == route_msg::IFM_DATA_AT);
    assert!(offset_of!(libc::if_data, ifi_link_state) == route_msg::IFI_LINK_STATE_AT);
    assert!(libc::RTM_VERSION == route_msg::RTM_VERSION as libc::c_int);
    assert!(libc::RTM_IFINFO == route_msg::RTM_IFINFO as libc::c_int);
    assert!(libc::RTM_DESYNC == route_msg::RTM_DESYNC as libc::c_int);
};

/// Starts watching the link state of the carp `interfaces`: `hint` is called
/// on every RTM_IFINFO about one of them and on RTM_DESYNC (messages lost);
/// the watch ends when `hint` returns false. Must be called inside the
/// runtime. An error means there is no watch (the caller keeps polling).
pub fn watch_carp_links(
    interfaces: Vec<String>,
    hint: impl FnMut() -> bool + Send + 'static,
) -> io::Result<()> {
    let family = AddressFamily::from_i32(libc::AF_ROUTE)
        .ok_or_else(|| io::Error::other("no AF_ROUTE address family"))?;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket(family, SockType::Raw, flags, None)?;
    // Only a saving (ifstated and sasyncd treat it so too): unfiltered, the
    // other messages are read and dropped.
    let filter = 1 << route_msg::RTM_IFINFO;
    if let Err(error) = setsockopt(&fd, RouteMsgFilter, &filter) {
        tracing::debug!(%error, "routing socket: no message filter");
    }
    #[allow(unsafe_code)]
    // SAFETY: the OwnedFd owns the socket for its whole life and never
    // replaces it, so the descriptor stays open and the same while the
    // AsyncFd holds it, which is what register requires.
    let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
    tokio::spawn(read(fd, interfaces, hint));
    Ok(())
}

/// Reads messages until `hint` says nobody listens, or the socket fails for
/// good (logged once: the backend's poll goes on without events).
async fn read(fd: AsyncFd<OwnedFd>, interfaces: Vec<String>, mut hint: impl FnMut() -> bool) {
    let mut buffer = [0u8; route_msg::RTM_MAXSIZE];
    loop {
        let read = fd
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd, &mut buffer).map_err(io::Error::from)
            })
            .await;
        let length = match read {
            Ok(length) => length,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(%error, "carp link events stopped: the interfaces are polled only");
                return;
            }
        };
        let wanted = match route_msg::parse(&buffer[..length]) {
            Ok(Message::IfInfo { index, link_state }) => {
                let name = if_indextoname(u32::from(index)).ok();
                let name = name.as_deref().and_then(|n| n.to_str().ok());
                let ours = name.is_some_and(|n| interfaces.iter().any(|i| i == n));
                if ours {
                    let carp = route_msg::carp_state(link_state);
                    tracing::debug!(interface = name, link_state, carp, "carp link state");
                }
                ours
            }
            Ok(Message::Desync) => {
                tracing::debug!("routing socket overflowed (RTM_DESYNC): polling");
                true
            }
            Ok(Message::Other(_)) => false,
            Err(error) => {
                tracing::debug!(%error, "routing message not read");
                false
            }
        };
        if wanted && !hint() {
            return;
        }
    }
}
