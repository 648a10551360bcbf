//! `[failover.bgp]`: the keys of the BGP anycast backend (BIRD 2), and the
//! two value types only it takes: a route prefix and a BIRD protocol name.
//!
//! handoff never edits bird.conf: the operator's file holds two static
//! protocols (config/bird/handoff.conf), and handoff enables and disables
//! them through BIRD's control socket (`crate::failover::bgp`).

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::{Handover, values};

/// `[failover.bgp]` (BIRD 2 on any OS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgpConfig {
    /// BIRD's control socket (`bird -s`).
    pub socket: PathBuf,
    /// The service prefixes handoff's protocols announce; the move is
    /// confirmed for each of them.
    pub prefixes: Vec<Prefix>,
    /// The static protocol that announces at full preference (`up`).
    pub up_protocol: BirdName,
    /// The static protocol whose routes the export filter makes less
    /// preferred (`standby`).
    pub standby_protocol: BirdName,
    /// The BGP sessions to the routers: where the announcements go, and
    /// whose imported routes show where each router's best path points.
    pub sessions: Vec<BirdName>,
    /// Planned-stop handover: `graceful` (standby, then withdraw once the
    /// routers' best paths point elsewhere) or `fast` (withdraw at once).
    pub handover: Handover,
    /// Longest time one exchange with BIRD may take.
    #[serde(with = "values::duration")]
    pub timeout: Duration,
}

impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            socket: "/run/bird/bird.ctl".into(),
            prefixes: Vec::new(),
            up_protocol: BirdName("handoff_up".into()),
            standby_protocol: BirdName("handoff_standby".into()),
            sessions: Vec::new(),
            handover: Handover::default(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl BgpConfig {
    /// The prefixes' addresses, for hooks and Consul (`HANDOFF_VIPS`).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.prefixes.iter().map(|p| p.address).collect()
    }
}

/// A route prefix, `192.0.2.53/32` or `2001:db8::53/128`, with no host
/// bits set (BIRD refuses those in a static route, so they could never
/// match what the snippet announces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The network address.
    pub address: IpAddr,
    /// The prefix length.
    pub length: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected = "expected a prefix such as \"192.0.2.53/32\"";
        let (address, length) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no /length, {expected}"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address, {expected}"))?;
        let bits: u8 = if address.is_ipv4() { 32 } else { 128 };
        let length: u8 = length
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{length:?} is not a prefix length 0..{bits}"))?;
        let host_bits = match address {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) & low_bits(32 - length),
            IpAddr::V6(v6) => u128::from(v6) & low_bits(128 - length),
        };
        if host_bits != 0 {
            return Err(format!(
                "{text:?} has host bits set: a route names a network, such as {address}/{bits}"
            ));
        }
        Ok(Prefix { address, length })
    }
}

/// A mask of the `count` lowest bits.
fn low_bits(count: u8) -> u128 {
    match count {
        0 => 0,
        128.. => u128::MAX,
        n => (1u128 << n) - 1,
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// A BIRD protocol name: a symbol of its config language (letters, digits
/// and `_`, not starting with a digit; bird(8), "Lexical structure"). Only
/// symbols are taken, so that a name sent in a command never becomes a
/// pattern matching other protocols or a syntax BIRD parses differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdName(pub String);

impl fmt::Display for BirdName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BirdName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && name.len() <= 64 {
            Ok(BirdName(name))
        } else {
            Err(de::Error::custom(format!(
                "{name:?} is not a BIRD protocol name, expected letters, digits and _ (not starting with a digit), such as \"handoff_up\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_networks() {
        let p: Prefix = "192.0.2.53/32".parse().unwrap();
        assert_eq!(p.to_string(), "192.0.2.53/32");
        assert_eq!(
            "2001:db8::/32".parse::<Prefix>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!("192.0.2.0/24".parse::<Prefix>().is_ok());
        assert!("0.0.0.0/0".parse::<Prefix>().is_ok());
        for (bad, says) in [
            ("192.0.2.53", "no /length"),
            ("192.0.2.53/33", "not a prefix length"),
            ("192.0.2.53/24", "host bits"),
            ("2001:db8::1/64", "host bits"),
            ("example/32", "not an IP address"),
        ] {
            let error = bad.parse::<Prefix>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn protocol_names_are_symbols() {
        let name =
            |s: &str| BirdName::deserialize(de::value::StrDeserializer::<de::value::Error>::new(s));
        assert!(name("handoff_up").is_ok());
        assert!(name("_x1").is_ok());
        for bad in ["", "1up", "handoff*", "a b", "\"x\"", "up;disable all"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }
}
