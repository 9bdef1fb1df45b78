//! Where a database or directory server is, as a resource's `url` names it:
//! `scheme://host[:port][/path]`, never with credentials (the admin account of the reset
//! settings logs in, from the vault) or options.

/// A parsed server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
    /// The path as written (`""` or `/…`), for the connector to read or refuse.
    pub path: String,
}

/// `text` as a URL of one of `schemes` for `product`, `default_port` when it names none;
/// every error ends with `hint` and none repeats what the URL held after its host.
pub fn parse(
    text: &str,
    schemes: &[&str],
    product: &str,
    default_port: u16,
    hint: &str,
) -> Result<ServerUrl, String> {
    let url = url::Url::parse(text).map_err(|e| format!("the url: {e}; {hint}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "the url: the scheme must be {}:// for a {product} resource; {hint}",
            schemes[0]
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url of a {product} resource: credentials do not belong in it (the admin account \
             of the reset settings logs in); {hint}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("the url: no options are read from it; {hint}"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(format!("the url: no host; {hint}")),
    };
    Ok(ServerUrl {
        host,
        port: url.port().unwrap_or(default_port),
        path: url.path().to_string(),
    })
}

/// `host:port`, with an IPv6 address in brackets: a target's name in messages and its
/// concurrency limit.
pub fn label(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
