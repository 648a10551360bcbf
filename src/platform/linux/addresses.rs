//! Address events: an rtnetlink(7) socket in the address groups, so that the
//! keepalived backend looks at its VIPs the moment one comes or goes rather
//! than at its next poll.
//!
//! Owns: the socket, its reader task, and the judgement of each datagram
//! ([`judge`], pure and tested on bytes). Does not own: what a VIP on a
//! local interface means (`crate::failover::keepalived`), which polls the
//! addresses itself on every hint; so a message that cannot be read, or one
//! lost to an overrun, costs one poll, never a wrong role.
//!
//! The socket joins RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR, whose
//! RTM_NEWADDR and RTM_DELADDR messages carry the address as IFA_LOCAL (IPv4)
//! and IFA_ADDRESS (rtnetlink(7), "RTM_NEWADDR"). The messages are decoded by
//! netlink-packet-route and received with netlink-sys's tokio socket (both
//! from the rust-netlink project, the layers under rtnetlink, which brings
//! request/response machinery this one-way listener does not need). A socket
//! whose receive queue overflowed loses messages and reports ENOBUFS on the
//! next read (netlink(7), "ENOBUFS"): that is a hint too.

use std::{io, net::IpAddr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, address::AddressAttribute};
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
use nix::libc;

/// Room for one datagram. Address notifications are one message of about
/// 100 bytes each; the kernel sizes its multicast datagrams below a page
/// (NLMSG_GOODSIZE), and one that was cut short reads as undecodable: a hint.
const DATAGRAM: usize = 8192;

/// Starts watching this network namespace's address changes. `hint` is
/// called whenever one of `addresses` is added or removed, and whenever
/// events may have been lost; the watch ends when `hint` returns false.
/// Must be called inside the runtime (the socket registers with it). An
/// error means there is no watch (the caller keeps polling).
pub fn watch_addresses(
    addresses: Vec<IpAddr>,
    hint: impl FnMut() -> bool + Send + 'static,
) -> io::Result<()> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    let groups = libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR;
    let groups = u32::try_from(groups).map_err(io::Error::other)?;
    socket.socket_mut().bind(&SocketAddr::new(0, groups))?;
    tokio::spawn(read(socket, addresses, hint));
    Ok(())
}

/// Reads datagrams until `hint` says nobody listens, or the socket fails
/// for good (logged once: the backend's poll goes on without events).
async fn read(socket: TokioSocket, addresses: Vec<IpAddr>, mut hint: impl FnMut() -> bool) {
    let mut buffer = Vec::with_capacity(DATAGRAM);
    loop {
        buffer.clear();
        let verdict = match socket.recv(&mut buffer).await {
            Ok(()) => judge(&buffer, &addresses),
            Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => Verdict::Lost,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(%error, "address events stopped: the addresses are polled only");
                return;
            }
        };
        match verdict {
            Verdict::Others => continue,
            Verdict::Ours => {}
            Verdict::Lost => tracing::debug!("address events lost (ENOBUFS): polling"),
            Verdict::Undecodable(error) => {
                tracing::debug!(%error, "undecodable address event: polling");
            }
        }
        if !hint() {
            return;
        }
    }
}

/// What one datagram from the address groups says about `addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// One of them was added or removed.
    Ours,
    /// Only other addresses changed.
    Others,
    /// The kernel says messages were lost (NLMSG_OVERRUN).
    Lost,
    /// A message could not be decoded (why).
    Undecodable(String),
}

/// Judges every message of `datagram` (a datagram may hold several, each
/// padded to 4 bytes: netlink(7), NLMSG_ALIGN).
fn judge(datagram: &[u8], addresses: &[IpAddr]) -> Verdict {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) {
            Ok(message) => message,
            Err(error) => return Verdict::Undecodable(error.to_string()),
        };
        match &message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(change) | RouteNetlinkMessage::DelAddress(change),
            ) if change.attributes.iter().any(|a| names(a, addresses)) => return Verdict::Ours,
            NetlinkPayload::Overrun(_) => return Verdict::Lost,
            _ => {}
        }
        // deserialize checked that the length is at least a header's and
        // within the datagram, so this moves on.
        let length = usize::try_from(message.header.length).unwrap_or(usize::MAX);
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Verdict::Others
}

/// Whether `attribute` is the address (IFA_ADDRESS) or local address
/// (IFA_LOCAL) of one of `addresses`.
fn names(attribute: &AddressAttribute, addresses: &[IpAddr]) -> bool {
    match attribute {
        AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => addresses.contains(ip),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::{AddressFamily, address::AddressMessage};

    use super::*;

    const VIP: &str = "192.0.2.100";

    /// An address message as the kernel sends it to the address groups.
    fn message(new: bool, family: AddressFamily, attributes: Vec<AddressAttribute>) -> Vec<u8> {
        let mut change = AddressMessage::default();
        change.header.family = family;
        change.header.prefix_len = 24;
        change.header.index = 2;
        change.attributes = attributes;
        let inner = if new {
            RouteNetlinkMessage::NewAddress(change)
        } else {
            RouteNetlinkMessage::DelAddress(change)
        };
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn v4(new: bool, address: &str) -> Vec<u8> {
        let ip: IpAddr = address.parse().unwrap();
        let attributes = vec![
            AddressAttribute::Address(ip),
            AddressAttribute::Local(ip),
            AddressAttribute::Label("eth0".into()),
        ];
        message(new, AddressFamily::Inet, attributes)
    }

    #[test]
    fn a_vip_added_or_removed_is_ours_and_other_addresses_are_not() {
        let vips = [VIP.parse().unwrap()];
        assert_eq!(judge(&v4(false, VIP), &vips), Verdict::Ours);
        assert_eq!(judge(&v4(true, VIP), &vips), Verdict::Ours);
        assert_eq!(judge(&v4(true, "192.0.2.7"), &vips), Verdict::Others);
        assert_eq!(judge(&v4(false, "192.0.2.7"), &vips), Verdict::Others);
        assert_eq!(judge(&v4(true, VIP), &[]), Verdict::Others);
    }

    #[test]
    fn ipv6_carries_the_address_in_ifa_address() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let bytes = message(
            false,
            AddressFamily::Inet6,
            vec![AddressAttribute::Address(vip)],
        );
        assert_eq!(judge(&bytes, &[vip]), Verdict::Ours);
        assert_eq!(judge(&bytes, &[VIP.parse().unwrap()]), Verdict::Others);
    }

    #[test]
    fn every_message_of_a_datagram_is_read() {
        let vips = [VIP.parse().unwrap()];
        let mut datagram = v4(true, "192.0.2.7");
        assert_eq!(datagram.len() % 4, 0, "a message is padded to 4 bytes");
        datagram.extend(v4(false, VIP));
        assert_eq!(judge(&datagram, &vips), Verdict::Ours);
        let mut datagram = v4(true, "192.0.2.7");
        datagram.extend(v4(false, "192.0.2.8"));
        assert_eq!(judge(&datagram, &vips), Verdict::Others);
    }

    #[test]
    fn cut_or_garbled_datagrams_are_undecodable_and_an_overrun_is_lost() {
        let vips = [VIP.parse().unwrap()];
        let whole = v4(false, VIP);
        for cut in [1, 15, 16, whole.len() - 1] {
            assert!(
                matches!(judge(&whole[..cut], &vips), Verdict::Undecodable(_)),
                "cut at {cut}"
            );
        }
        // A header whose length says less than a header (0): never a loop.
        let mut zero = whole.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(judge(&zero, &vips), Verdict::Undecodable(_)));
        // NLMSG_OVERRUN (4), a bare header.
        let mut overrun = vec![0u8; 16];
        overrun[..4].copy_from_slice(&16u32.to_ne_bytes());
        overrun[4..6].copy_from_slice(&4u16.to_ne_bytes());
        assert_eq!(judge(&overrun, &vips), Verdict::Lost);
        assert_eq!(judge(&[], &vips), Verdict::Others);
    }
}
