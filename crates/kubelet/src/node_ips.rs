//! `--node-ip`: one IP or a dual-stack pair (upstream's nodeutil.ParseNodeIPArgument), and the
//! node's primary IP when the flag is absent or unspecified (`0.0.0.0` / `::`: the host's
//! default-route address of that family, `::` preferring IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

/// A bad `--node-ip` value; start-up fails with it, as upstream's `bad --node-ip`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad --node-ip {value:?}: could not parse {part:?}")]
    Parse { value: String, part: String },
    #[error("bad --node-ip {0:?}: must contain either a single IP or a dual-stack pair of IPs")]
    NotSinglePair(String),
    #[error("bad --node-ip {0:?}: dual-stack node IP cannot include '0.0.0.0' or '::'")]
    DualStackUnspecified(String),
}

/// The parsed `--node-ip`: nothing, one IP (possibly unspecified), or an IPv4/IPv6 pair in
/// the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIps {
    pub primary: Option<IpAddr>,
    pub secondary: Option<IpAddr>,
}

impl NodeIps {
    /// Parses the flag's value (empty: no IP given).
    pub fn parse(value: &str) -> Result<Self, Error> {
        if value.trim().is_empty() {
            return Ok(Self::default());
        }
        let ips = value
            .split(',')
            .map(|part| {
                part.trim().parse::<IpAddr>().map_err(|_| Error::Parse { value: value.into(), part: part.into() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match ips.as_slice() {
            [one] => Ok(Self { primary: Some(*one), secondary: None }),
            [a, b] if a.is_ipv4() != b.is_ipv4() => {
                if a.is_unspecified() || b.is_unspecified() {
                    return Err(Error::DualStackUnspecified(value.into()));
                }
                Ok(Self { primary: Some(*a), secondary: Some(*b) })
            }
            _ => Err(Error::NotSinglePair(value.into())),
        }
    }

    /// An IP was given and is not `0.0.0.0` / `::` (upstream's nodeIPSpecified).
    pub fn specified(&self) -> bool {
        self.primary.is_some_and(|ip| !ip.is_unspecified())
    }

    /// The node's primary IP: the given one, else the host's default-route address, of the
    /// family the flag prefers (IPv6 for `::`, falling back to IPv4; otherwise IPv4 first).
    pub fn resolve_primary(&self) -> Option<IpAddr> {
        if self.specified() {
            return self.primary;
        }
        let prefer_v6 = self.primary.is_some_and(|ip| ip.is_ipv6());
        if prefer_v6 {
            default_route_source(true).or_else(|| default_route_source(false))
        } else {
            default_route_source(false).or_else(|| default_route_source(true))
        }
    }

    /// The value of the `alpha.kubernetes.io/provided-node-ip` annotation: the given IPs.
    pub fn provided(&self) -> Option<String> {
        if !self.specified() {
            return None;
        }
        Some(self.primary.iter().chain(self.secondary.iter()).map(IpAddr::to_string).collect::<Vec<_>>().join(","))
    }
}

/// The source address of the default route of a family (no packet is sent).
fn default_route_source(v6: bool) -> Option<IpAddr> {
    let (bind, target): (IpAddr, IpAddr) = if v6 {
        (Ipv6Addr::UNSPECIFIED.into(), "2001:db8::1".parse().ok()?)
    } else {
        (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::new(10, 255, 255, 255).into())
    };
    let socket = UdpSocket::bind((bind, 0)).ok()?;
    socket.connect((target, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_dual_stack() {
        assert_eq!(NodeIps::parse("").unwrap(), NodeIps::default());
        let one = NodeIps::parse(" 10.0.0.7 ").unwrap();
        assert_eq!(one.primary, Some("10.0.0.7".parse().unwrap()));
        assert!(one.specified());
        let dual = NodeIps::parse("fd00::7,10.0.0.7").unwrap();
        assert_eq!(dual.primary, Some("fd00::7".parse().unwrap()), "order kept");
        assert_eq!(dual.secondary, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(dual.provided().as_deref(), Some("fd00::7,10.0.0.7"));
    }

    #[test]
    fn upstream_refusals() {
        assert!(matches!(NodeIps::parse("10.0.0.1,10.0.0.2"), Err(Error::NotSinglePair(_))));
        assert!(matches!(NodeIps::parse("10.0.0.1,fd00::1,10.0.0.3"), Err(Error::NotSinglePair(_))));
        assert!(matches!(NodeIps::parse("0.0.0.0,fd00::1"), Err(Error::DualStackUnspecified(_))));
        assert!(matches!(NodeIps::parse("10.0.0.1,::"), Err(Error::DualStackUnspecified(_))));
        let err = NodeIps::parse("10.0.0.1,nope").unwrap_err().to_string();
        assert_eq!(err, "bad --node-ip \"10.0.0.1,nope\": could not parse \"nope\"");
    }

    #[test]
    fn unspecified_means_detect() {
        for value in ["0.0.0.0", "::"] {
            let ips = NodeIps::parse(value).unwrap();
            assert!(!ips.specified());
            assert_eq!(ips.provided(), None);
        }
    }
}
