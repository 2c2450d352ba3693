//! IP addresses and CIDR blocks for the bypass list, on `std::net` alone.

use std::fmt;
use std::net::IpAddr;

/// One CIDR block (`203.0.113.0/24`, `2001:db8::/32`) or a single address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`. Host bits set beyond the prefix are an error
    /// (`10.0.0.1/8` is almost always a typo for `10.0.0.0/8` or `10.0.0.1/32`).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("`{text}`: prefix length must be 0..={max}")),
            },
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network_bits() != bits(addr) {
            return Err(format!(
                "`{text}` has host bits set beyond /{prefix}: did you mean `{}`?",
                Cidr {
                    addr: from_bits(cidr.network_bits(), addr.is_ipv4()),
                    prefix
                }
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` lies in this block. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match
    /// IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(bits(ip), self.prefix, ip.is_ipv4()) == self.network_bits()
    }

    fn network_bits(&self) -> u128 {
        mask(bits(self.addr), self.prefix, self.addr.is_ipv4())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(b: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((b as u32).into())
    } else {
        IpAddr::V6(b.into())
    }
}

fn mask(b: u128, prefix: u8, v4: bool) -> u128 {
    let width = if v4 { 32 } else { 128 };
    let host = u32::from(width - prefix);
    if host >= 128 {
        0
    } else {
        b >> host << host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_and_v6() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("2001:db8::1")));
        let single = Cidr::parse("203.0.113.7").unwrap();
        assert!(single.contains(ip("203.0.113.7")));
        assert!(!single.contains(ip("203.0.113.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
    }

    #[test]
    fn rejects_bad_blocks() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "nope",
            "::1/129",
            "10.0.0.0/+8",
            "1.2.3.4/",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }
}
