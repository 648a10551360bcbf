//! The VIPs on the loopback interface (`[failover.keepalived] loopback_vip`):
//! adding and removing them through rtnetlink(7), and the ARP settings
//! without which that would be unsafe.
//!
//! An address on `lo` is a local address of the whole host, so by default
//! Linux answers ARP for it on every interface (`arp_ignore` 0: "reply for
//! any local target IP address, configured on any interface"), and may
//! name it as the sender of its own ARP requests (`arp_announce` 0). Either
//! would draw the VIP's traffic to a node that does not hold it. With
//! `arp_ignore` >= 1 ("reply only if the target IP address is local address
//! configured on the incoming interface") and `arp_announce` 2 ("always use
//! the best local address for this target"), the VIP on `lo` is never
//! announced (ip-sysctl.rst). Both are per interface, the effective value
//! being the larger of `conf/all` and `conf/IFACE`, so every interface is
//! checked. IPv6 needs nothing: neighbour solicitations are answered only
//! for addresses on the interface they arrive on (RFC 4861 7.2.3).

use std::{io, net::IpAddr, path::Path};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::libc;

/// Where the per-interface IPv4 settings are (ip-sysctl.rst).
const IPV4_CONF: &str = "/proc/sys/net/ipv4/conf";

/// Puts `addresses` on `lo` (`present`) or takes them off. Idempotent: an
/// address already there is replaced, one already gone is no error.
pub fn set_loopback_addresses(addresses: &[IpAddr], present: bool) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex("lo").map_err(io::Error::from)?;
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    for (seq, &address) in (1..).zip(addresses) {
        let request = request(address, index, present, seq);
        socket.send(&request, 0)?;
        match acknowledged(&socket, seq)? {
            // Removing what is not there (EADDRNOTAVAIL) is done.
            Err(code) if !present && code == libc::EADDRNOTAVAIL => {}
            Err(code) => {
                let error = io::Error::from_raw_os_error(code);
                let verb = if present { "adding" } else { "removing" };
                return Err(io::Error::new(
                    error.kind(),
                    format!("{verb} {address} on lo: {error}"),
                ));
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// One RTM_NEWADDR or RTM_DELADDR for `address` as a host-scope /32 (/128)
/// on interface `index`: host scope, so it is never picked as the source of
/// anything this node sends elsewhere.
fn request(address: IpAddr, index: u32, present: bool, seq: u32) -> Vec<u8> {
    let mut change = AddressMessage::default();
    change.header.index = index;
    change.header.scope = AddressScope::Host;
    match address {
        IpAddr::V4(_) => {
            change.header.family = AddressFamily::Inet;
            change.header.prefix_len = 32;
            change.attributes.push(AddressAttribute::Local(address));
        }
        IpAddr::V6(_) => {
            change.header.family = AddressFamily::Inet6;
            change.header.prefix_len = 128;
            // No duplicate address detection on lo: usable at once.
            change.header.flags = AddressHeaderFlags::Nodad;
        }
    }
    change.attributes.push(AddressAttribute::Address(address));
    let mut header = NetlinkHeader::default();
    header.sequence_number = seq;
    header.flags = if present {
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    let inner = if present {
        RouteNetlinkMessage::NewAddress(change)
    } else {
        RouteNetlinkMessage::DelAddress(change)
    };
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Waits for the kernel's answer to request `seq`: `Err(errno)` for a NACK.
/// The kernel answers a request on the caller's own socket before
/// `sendmsg` returns, so this never waits for anything else.
fn acknowledged(socket: &Socket, seq: u32) -> io::Result<Result<(), i32>> {
    // Bounded: an answer is one datagram; anything else is skipped.
    for _ in 0..16 {
        let mut buffer = Vec::with_capacity(4096);
        socket.recv(&mut buffer, 0)?;
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if message.header.sequence_number != seq {
            continue;
        }
        if let NetlinkPayload::Error(error) = message.payload {
            return Ok(match error.code {
                None => Ok(()),
                Some(code) => Err(-code.get()),
            });
        }
    }
    Err(io::Error::other("no answer from rtnetlink"))
}

/// Why the VIPs may not go on `lo` here: an interface whose effective
/// `arp_ignore` is 0 or `arp_announce` below 2, named; `None` when every
/// interface is safe.
pub fn loopback_arp_problem() -> Option<String> {
    let conf = Path::new(IPV4_CONF);
    let read = |iface: &str, key: &str| -> Option<u8> {
        let text = std::fs::read_to_string(conf.join(iface).join(key)).ok()?;
        text.trim().parse().ok()
    };
    let (Some(all_ignore), Some(all_announce)) =
        (read("all", "arp_ignore"), read("all", "arp_announce"))
    else {
        return Some(format!(
            "cannot read {IPV4_CONF}/all/arp_ignore and arp_announce"
        ));
    };
    let entries = match std::fs::read_dir(conf) {
        Ok(entries) => entries,
        Err(error) => return Some(format!("cannot list {IPV4_CONF}: {error}")),
    };
    let mut unsafe_ones = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "all" | "default" | "lo") {
            continue;
        }
        let ignore = read(&name, "arp_ignore").unwrap_or(0).max(all_ignore);
        let announce = read(&name, "arp_announce").unwrap_or(0).max(all_announce);
        if ignore == 0 || announce < 2 {
            unsafe_ones.push(format!(
                "{name} (arp_ignore {ignore}, arp_announce {announce})"
            ));
        }
    }
    unsafe_ones.sort();
    (!unsafe_ones.is_empty()).then(|| {
        format!(
            "loopback_vip needs net.ipv4.conf.all.arp_ignore = 1 and net.ipv4.conf.all.arp_announce = 2, or this host would answer ARP for the VIP on lo: {}",
            unsafe_ones.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_host_scope_single_addresses_on_the_given_interface() {
        for (address, family, prefix) in [
            ("192.0.2.100", AddressFamily::Inet, 32),
            ("2001:db8::100", AddressFamily::Inet6, 128),
        ] {
            let bytes = request(address.parse().unwrap(), 1, true, 7);
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
            assert_eq!(message.header.sequence_number, 7);
            assert_ne!(
                message.header.flags & NLM_F_ACK,
                0,
                "an answer is asked for"
            );
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(change)) =
                message.payload
            else {
                panic!("not an RTM_NEWADDR: {:?}", message.payload);
            };
            assert_eq!(change.header.family, family);
            assert_eq!(change.header.prefix_len, prefix);
            assert_eq!(change.header.scope, AddressScope::Host);
            assert_eq!(change.header.index, 1);
            assert!(
                change
                    .attributes
                    .contains(&AddressAttribute::Address(address.parse().unwrap()))
            );
        }
        let bytes = request("192.0.2.100".parse().unwrap(), 1, false, 8);
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert!(matches!(
            message.payload,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(_))
        ));
    }
}
