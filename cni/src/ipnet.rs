//! IPv4 CIDR helpers (parsing `a.b.c.d/n`, containment, host ranges) for configs and IPAM.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network or interface address with prefix length (`10.22.0.5/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    /// The address (may have host bits set when used as an interface address).
    pub addr: Ipv4Addr,
    /// Prefix length 0..=32.
    pub prefix: u8,
}

/// A CIDR string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}: expected a.b.c.d/n with n in 0..=32")]
pub struct CidrError(pub String);

impl FromStr for Ipv4Net {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or_else(|| CidrError(s.to_string()))?;
        let addr = a.parse().map_err(|_| CidrError(s.to_string()))?;
        let prefix: u8 = p.parse().map_err(|_| CidrError(s.to_string()))?;
        if prefix > 32 {
            return Err(CidrError(s.to_string()));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Net {
    /// The netmask as a u32.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// This prefix with host bits cleared.
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net {
            addr: self.network(),
            prefix: self.prefix,
        }
    }
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    /// First usable host (network + 1), as host-local's default range start.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).saturating_add(1))
    }
    /// Last usable host (broadcast − 1), as host-local's default range end.
    pub fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()).saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_and_ranges() {
        let n: Ipv4Net = "10.22.0.5/24".parse().unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(10, 22, 0, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 22, 0, 255));
        assert_eq!(n.first_host(), Ipv4Addr::new(10, 22, 0, 1));
        assert_eq!(n.last_host(), Ipv4Addr::new(10, 22, 0, 254));
        assert!(n.contains(Ipv4Addr::new(10, 22, 0, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 22, 1, 1)));
        assert_eq!(n.trunc().to_string(), "10.22.0.0/24");
        assert_eq!("0.0.0.0/0".parse::<Ipv4Net>().unwrap().mask(), 0);
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
    }
}
