//! The source-address ranges an agent may call from (seed 003, 18.6: "restrict agent access
//! by IP"). Set on the enrollment token, copied to the agent, checked on enrollment and on
//! every call.

use std::net::IpAddr;

use ipnet::IpNet;

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
        .any(|n| n.contains(&ip))
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
