//! The source-address ranges an agent may call from (the reference product's "restrict agent
//! access by IP"). Set on the enrollment token, copied to the agent, checked on enrollment and on
//! every call.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::error::{Error, Result};

/// Parses CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) or single addresses; every bad entry is
/// reported.
pub fn parse(field: &str, entries: &[String]) -> Result<Vec<IpNet>> {
    let mut nets = Vec::new();
    let mut problems = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let e = e.trim();
        match e.parse::<IpNet>() {
            Ok(n) => nets.push(n),
            Err(_) => match e.parse::<IpAddr>() {
                Ok(a) => nets.push(IpNet::from(a)),
                Err(_) => problems.push(crate::error::FieldProblem::new(
                    format!("{field}[{i}]"),
                    format!("'{e}' is neither an address nor a CIDR range like 10.0.0.0/8"),
                )),
            },
        }
    }
    if problems.is_empty() {
        Ok(nets)
    } else {
        Err(Error::Validation(problems))
    }
}

/// True when `allowed` (stored JSON) is empty or contains `ip`.
pub fn allows(allowed: &str, ip: Option<&str>) -> bool {
    let entries: Vec<String> = serde_json::from_str(allowed).unwrap_or_default();
    if entries.is_empty() {
        return true;
    }
    let Some(ip) = ip.and_then(|i| i.parse::<IpAddr>().ok()) else {
        return false;
    };
    // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    entries
        .iter()
        .filter_map(|e| {
            e.parse::<IpNet>()
                .ok()
                .or_else(|| e.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .any(|n| unmapped(n).contains(&ip))
}

/// A range written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) as the IPv4 range it names,
/// since the caller's address is compared in its IPv4 form; any other range as it is.
fn unmapped(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    match v6.addr().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= 96 => {
            Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
        }
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_addresses() {
        let a = r#"["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]"#;
        assert!(allows(a, Some("10.1.2.3")));
        assert!(allows(a, Some("192.168.1.7")));
        assert!(allows(a, Some("::ffff:10.9.9.9")));
        assert!(allows(a, Some("2001:db8::1")));
        assert!(!allows(a, Some("192.168.1.8")));
        assert!(!allows(a, Some("127.0.0.1")));
        assert!(!allows(a, None));
        assert!(allows("[]", Some("127.0.0.1")));
    }

    /// Caught by the `api_bodies` fuzz target's check that every accepted range admits its own
    /// address: such a range was accepted for an enrollment token and then matched no caller.
    #[test]
    fn ipv4_mapped_ranges_admit_the_ipv4_callers_they_name() {
        let nets = parse(
            "allowed_networks",
            &["::ffff:10.0.0.0/104".into(), "::ffff:192.0.2.7".into()],
        )
        .unwrap();
        let stored: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        let a = serde_json::to_string(&stored).unwrap();
        assert!(allows(&a, Some("10.1.2.3")));
        assert!(allows(&a, Some("::ffff:10.1.2.3")));
        assert!(allows(&a, Some("192.0.2.7")));
        assert!(!allows(&a, Some("11.0.0.1")));
        assert!(!allows(&a, Some("::ffff:11.0.0.1")));
        assert!(!allows(&a, Some("192.0.2.8")));
        assert!(!allows(&a, Some("2001:db8::1")));
        // A range wider than the mapped block stays IPv6.
        assert!(!allows(r#"["::/64"]"#, Some("10.1.2.3")));
    }

    #[test]
    fn bad_entries_are_each_reported() {
        let e = parse(
            "allowed_networks",
            &["10.0.0.0/8".into(), "nope".into(), "1.2.3.4/99".into()],
        )
        .unwrap_err();
        let Error::Validation(p) = e else { panic!() };
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].field, "allowed_networks[1]");
    }
}
