//! The machine and its local accounts, as discovery reports them.

use std::path::Path;

use lockstep_agent_protocol::messages::{Discovery, LocalAccount};

use crate::config::AccountsConfig;
use crate::error::{Error, Result};

/// Accounts in `passwd` within the UID range (and root, if configured).
pub fn local_accounts(cfg: &AccountsConfig) -> Result<Vec<LocalAccount>> {
    let text = std::fs::read_to_string(&cfg.passwd_file).map_err(Error::io(format!(
        "cannot read {}",
        cfg.passwd_file.display()
    )))?;
    Ok(parse_passwd(&text)
        .into_iter()
        .filter(|a| {
            (a.uid == 0 && cfg.include_root) || (cfg.uid_min..=cfg.uid_max).contains(&a.uid)
        })
        .collect())
}

fn parse_passwd(text: &str) -> Vec<LocalAccount> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let gecos = f[4].split(',').next().unwrap_or("").trim();
            Some(LocalAccount {
                login_name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                description: (!gecos.is_empty()).then(|| gecos.to_string()),
            })
        })
        .collect()
}

/// The stored hash of `login` in `shadow`, if the account has a line there.
pub fn shadow_hash(shadow: &Path, login: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(shadow)
            .map_err(Error::io(format!("cannot read {}", shadow.display())))?,
    );
    Ok(text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        (f.next() == Some(login))
            .then(|| zeroize::Zeroizing::new(f.next().unwrap_or("").to_string()))
    }))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `ID VERSION_ID` from os-release.
fn os() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    match (field("ID"), field("VERSION_ID")) {
        (Some(id), Some(v)) => format!("{id} {v}"),
        (Some(id), None) => id,
        _ => "linux".into(),
    }
}

/// The local address this machine reaches the server from: the one the server knows it by.
fn address_towards(server: &str) -> Option<String> {
    let host_port = server.strip_prefix("https://")?.split('/').next()?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()?
        .next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(target).ok()?;
    Some(s.local_addr().ok()?.ip().to_string())
}

/// What discovery reports.
pub fn discover(server: &str, cfg: &AccountsConfig) -> Result<Discovery> {
    Ok(Discovery {
        hostname: hostname(),
        os: os(),
        addresses: address_towards(server).into_iter().collect(),
        accounts: local_accounts(cfg)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_are_parsed_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/usr/sbin/nologin\n\
             alice:x:1001:1001:Alice A,,,:/home/alice:/bin/sh\nbroken line\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        let cfg = AccountsConfig {
            passwd_file: passwd,
            ..AccountsConfig::default()
        };
        let names: Vec<(String, Option<String>)> = local_accounts(&cfg)
            .unwrap()
            .into_iter()
            .map(|a| (a.login_name, a.description))
            .collect();
        assert_eq!(
            names,
            vec![
                ("root".to_string(), Some("root".to_string())),
                ("alice".to_string(), Some("Alice A".to_string()))
            ]
        );
        let no_root = AccountsConfig {
            include_root: false,
            ..cfg
        };
        assert_eq!(local_accounts(&no_root).unwrap().len(), 1);
    }
}
