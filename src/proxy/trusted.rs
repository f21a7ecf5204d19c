//! `server.trusted_proxies`: the peers (CIDR ranges) whose forwarding headers the gate believes.

use std::net::IpAddr;

/// An address range such as `10.0.0.0/8`, `127.0.0.1/32` or `fd00::/8`. A bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has a prefix length outside 0..={max}"))?,
        };
        // `10.1.2.3/8` is either a slip for `10.1.2.3` alone or for the whole range: trusting the range on a guess
        // would believe forwarding headers from millions of addresses meant for one (Python's `ip_network` refuses
        // it too).
        let network = network(addr, prefix);
        if network != addr {
            return Err(format!(
                "`{text}` has bits set after its prefix: write `{network}/{prefix}` for the range or `{addr}` for \
                 the one address"
            ));
        }
        // An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps: peers are compared in their
        // IPv4 form (see [`Cidr::contains`]), so kept as IPv6 it would never match anyone.
        if let (IpAddr::V6(v6), 96..) = (addr, prefix) {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Ok(Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may show up as an IPv4-mapped IPv6 address on a dual-stack listener.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.addr.is_ipv4() == ip.is_ipv4() && network(ip, self.prefix) == self.addr
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into()),
        IpAddr::V6(a) => {
            IpAddr::V6((u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)).into())
        }
    }
}

/// True when `ip` is inside any of `ranges`.
pub fn is_trusted(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_they_should() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn an_ipv4_mapped_range_is_the_ipv4_range_it_maps() {
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped, Cidr::parse("10.0.0.0/8").unwrap());
        assert!(mapped.contains("10.9.8.7".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.9.8.7".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        assert!(!mapped.contains("::ffff:11.0.0.1".parse().unwrap()));
        let host = Cidr::parse("::ffff:127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        // Wider than the mapped block: an IPv6 range, which IPv4 peers are not in.
        let wide = Cidr::parse("::/80").unwrap();
        assert!(!wide.contains("10.0.0.1".parse().unwrap()));
        assert!(!Cidr::parse("::/0").unwrap().contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        for (slip, hint) in [
            ("10.1.2.3/8", "`10.0.0.0/8` for the range or `10.1.2.3`"),
            ("192.168.1.5/24", "`192.168.1.0/24`"),
            ("fd00::1/8", "`fd00::/8` for the range or `fd00::1`"),
            ("::ffff:10.0.0.1/104", "`::ffff:10.0.0.0/104`"),
        ] {
            let e = Cidr::parse(slip).unwrap_err();
            assert!(e.contains(hint), "{slip}: {e}");
        }
    }
}
