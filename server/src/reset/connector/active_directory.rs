//! The Active Directory connector: the account's `unicodePwd` replaced over LDAPS as the
//! resource's admin account (a domain admin, or an account delegated "Reset password" on the
//! users' OU); a password is checked by a simple bind as the account, afresh.
//!
//! **Where.** The resource's `url` (`ldaps://host[:port]`, port 636 by default), or else its
//! IP address (or name) on 636, and its `domain_name` (`corp.example.com`), which names the
//! directory to search (`DC=corp,DC=example,DC=com`) and completes logins. A login is
//! `user` (the `sAMAccountName`, bound as `user@domain`), `user@domain` (a user principal
//! name) or a distinguished name (`CN=…`).
//!
//! **TLS, always, pinned.** LDAPS only (a password over plain LDAP is refused by AD anyway):
//! the session is `tls_tunnel`'s, its certificate pinned at first use like an SSH host key
//! (`tls_certificate` in the reset settings) and everything the server sends on one
//! connection capped at [`ANSWER_CAP`]; `ldap3` speaks the LDAP messages over it.
//!
//! **What a refusal means.** LDAP applies a modify whole or not at all, so an answer with an
//! error code changed nothing: a policy refusal (`0000052D`: complexity, length, history) is
//! [`ApplyFailure::PolicyRefused`] (the engine tries a fresh generated password), anything
//! else [`ApplyFailure::Rejected`]. A connection lost or a timeout after the modify was sent
//! may have changed it.
//!
//! **A bind proves a password only when one is sent.** An empty password is an
//! unauthenticated bind, which servers accept for anyone: it is never sent. A refused bind
//! whose AD sub-code says the password was right but the account cannot log in now (must
//! change, expired) counts as accepted; locked, disabled or expired accounts prove nothing.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry, StdStream};
use zeroize::Zeroizing;

use super::words::clean;
use super::{
    Admin, ApplyFailure, Connector, KeyRecorder, TargetFailure, TargetKey, Timeouts, ber_frames,
    server_url, tls_tunnel,
};
use crate::vault::Secret;

/// Bytes one connection may receive from the server (a bind, a search for one entry, a
/// modify: a few kilobytes).
pub const ANSWER_CAP: u64 = 256 * 1024;
/// The LDAPS port when the resource names none.
const DEFAULT_PORT: u16 = 636;
/// The longest login taken (a distinguished name can be long; AD's own limit is higher).
const MAX_LOGIN: usize = 1024;
/// LDAP's invalidCredentials.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP's constraintViolation, AD's answer to a password its policy refuses.
const CONSTRAINT_VIOLATION: u32 = 19;
/// A person's account: a normal user account (`SAM_USER_OBJECT`), never a computer, a
/// trust or `krbtgt`.
const PERSON: &str = "(&(sAMAccountType=805306368)(!(sAMAccountName=krbtgt)))";

/// Where a domain controller is, the domain, and the certificate it must present.
#[derive(Debug, Clone)]
pub struct AdEndpoint {
    pub host: String,
    pub port: u16,
    /// The DNS name of the domain (`corp.example.com`).
    pub domain: String,
    /// `SHA256:…` of the leaf certificate recorded at first use; `None` accepts and reports.
    pub pinned_certificate: Option<String>,
}

impl AdEndpoint {
    /// The endpoint of a resource: its `url` when set, else `host` on 636; `domain` is the
    /// resource's `domain_name`.
    pub fn new(
        url: Option<&str>,
        host: &str,
        domain: Option<&str>,
        pinned_certificate: Option<String>,
    ) -> Result<AdEndpoint, String> {
        let (host, port) = match url {
            Some(url) => parse_url(url)?,
            None => (host.to_string(), DEFAULT_PORT),
        };
        let domain = domain
            .map(str::trim)
            .filter(|d| is_domain(d))
            .ok_or_else(|| {
                "an Active Directory resource needs its domain_name (such as corp.example.com): \
                 it names the directory and completes logins"
                    .to_string()
            })?
            .to_ascii_lowercase();
        Ok(AdEndpoint {
            host,
            port,
            domain,
            pinned_certificate,
        })
    }

    pub fn label(&self) -> String {
        server_url::label(&self.host, self.port)
    }

    /// `DC=corp,DC=example,DC=com`.
    pub fn base_dn(&self) -> String {
        self.domain
            .split('.')
            .map(|p| format!("DC={p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A DNS domain name of labels of letters, digits and `-`, with at least one dot.
fn is_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `ldaps://host[:port]`, refusing plain `ldap://`, credentials, a path and options.
pub fn parse_url(text: &str) -> Result<(String, u16), String> {
    let hint = "write it as ldaps://host[:port]";
    if text.starts_with("ldap://") {
        return Err(format!(
            "the url: plain LDAP would carry passwords in clear, and Active Directory refuses \
             password changes over it; {hint}"
        ));
    }
    let url = server_url::parse(text, &["ldaps"], "Active Directory", DEFAULT_PORT, hint)?;
    if !matches!(url.path.as_str(), "" | "/") {
        return Err(format!("the url: no path belongs in it; {hint}"));
    }
    Ok((url.host, url.port))
}

/// How a login names its account.
#[derive(Debug, PartialEq, Eq)]
enum Login<'a> {
    /// A `sAMAccountName`.
    Sam(&'a str),
    /// A user principal name (`user@domain`).
    Principal(&'a str),
    /// A distinguished name.
    Dn(&'a str),
}

/// The account a login names, or why it cannot be used.
fn login_of(login: &str) -> Result<Login<'_>, String> {
    if login.is_empty()
        || login.len() > MAX_LOGIN
        || login.chars().any(|c| c.is_control())
        || login.trim() != login
    {
        return Err(format!(
            "login '{}' cannot be used: it is empty, longer than {MAX_LOGIN} bytes, or holds \
             control characters or outer spaces",
            login.escape_debug()
        ));
    }
    if login.contains('=') {
        Ok(Login::Dn(login))
    } else if login.contains('@') {
        Ok(Login::Principal(login))
    } else if login.contains('\\') {
        Err(format!(
            "login '{}': write DOMAIN\\user logins as user (the sAMAccountName) or user@domain",
            login.escape_debug()
        ))
    } else {
        Ok(Login::Sam(login))
    }
}

impl AdEndpoint {
    /// The name a login binds as.
    fn bind_name(&self, login: &Login<'_>) -> String {
        match login {
            Login::Sam(sam) => format!("{sam}@{}", self.domain),
            Login::Principal(p) | Login::Dn(p) => p.to_string(),
        }
    }
}

/// A domain controller whose users' passwords are set and checked.
pub struct ActiveDirectoryConnector {
    pub endpoint: AdEndpoint,
    pub timeouts: Timeouts,
}

/// How a bind ended, when the server answered it.
enum Bound {
    Session(Ldap),
    /// The password is right; the account cannot log in with it now (must change, expired).
    RightButBlocked(String),
}

/// Whether a modify's result code is one a directory raises while it checks the change,
/// before anything is written: auth method, referral, confidentiality required, strong
/// auth, no such attribute, undefined type, constraint, syntax, no such object, bad DN,
/// access, unwilling, object class.
fn checked_before_change(rc: u32) -> bool {
    matches!(
        rc,
        7 | 8 | 10 | 13 | 16 | 17 | 19 | 21 | 32 | 34 | 50 | 53 | 65
    )
}

/// AD's sub-code in a refused bind's text (`…, data 52e, v4563`).
fn ad_data(text: &str) -> Option<&str> {
    let at = text.find("data ")? + 5;
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `"password"` in UTF-16LE, the only form in which AD takes a new `unicodePwd`.
fn unicode_pwd(password: &str) -> Zeroizing<Vec<u8>> {
    let quoted = Zeroizing::new(format!("\"{password}\""));
    Zeroizing::new(
        quoted
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect(),
    )
}

impl ActiveDirectoryConnector {
    /// A fresh session bound as `name` with `password`, and the certificate the DC showed.
    async fn bind(
        &self,
        name: &str,
        user: &str,
        password: &Secret,
    ) -> Result<(Bound, String), TargetFailure> {
        let target = self.label();
        if password.is_empty() {
            return Err(TargetFailure::Unprovable {
                target,
                user: user.to_string(),
                reason: "an empty password is an unauthenticated bind, which LDAP servers \
                         accept for anyone"
                    .into(),
            });
        }
        let lifetime = self.timeouts.connect + self.timeouts.command * 3;
        let connect = async {
            let tunnel = tls_tunnel::open(
                &self.endpoint.host,
                self.endpoint.port,
                self.endpoint.pinned_certificate.as_ref(),
                ANSWER_CAP,
                lifetime,
                ber_frames::next_message,
                &target,
            )
            .await?;
            let settings = LdapConnSettings::new().set_std_stream(StdStream::Unix(tunnel.local));
            let (conn, mut ldap) = LdapConnAsync::with_settings(settings, "ldapi:///")
                .await
                .map_err(|e| self.unreachable(e))?;
            tokio::spawn(async move {
                // Errors end the session; the caller sees them on its own operation.
                let _ = tokio::time::timeout(lifetime, conn.drive()).await;
            });
            let result = ldap
                .simple_bind(name, password.expose())
                .await
                .map_err(|e| self.unreachable(e))?;
            Ok::<_, TargetFailure>((ldap, result, tunnel.certificate))
        };
        let (ldap, result, certificate) = tokio::time::timeout(self.timeouts.connect, connect)
            .await
            .map_err(|_| TargetFailure::Timeout {
                target: target.clone(),
                step: "connecting and binding",
                seconds: self.timeouts.connect.as_secs(),
            })??;
        let words = clean(result.text.clone(), &[password.expose()]);
        match result.rc {
            0 => Ok((Bound::Session(ldap), certificate)),
            INVALID_CREDENTIALS => match ad_data(&result.text) {
                // Must change the password at next logon, or the password has expired: AD
                // says so only after the password was checked and found right.
                Some("773" | "532") => Ok((Bound::RightButBlocked(words), certificate)),
                // The wrong password (52e), or a server without AD's sub-codes.
                Some("52e") | None => Err(TargetFailure::AuthRejected {
                    target,
                    user: user.to_string(),
                }),
                // Locked, disabled, expired, outside logon hours: nothing is proven.
                Some(_) => Err(TargetFailure::Protocol {
                    target,
                    reason: format!("the bind as '{user}' was refused: {words}"),
                }),
            },
            rc => Err(TargetFailure::Protocol {
                target,
                reason: format!("the bind as '{user}' failed ({rc}): {words}"),
            }),
        }
    }

    fn unreachable(&self, e: ldap3::LdapError) -> TargetFailure {
        TargetFailure::Unreachable {
            target: self.label(),
            reason: clean(e.to_string(), &[]),
        }
    }

    /// The distinguished name of the account `login` names: exactly one user entry.
    async fn find(&self, ldap: &mut Ldap, login: &Login<'_>) -> Result<String, String> {
        let base_dn = self.endpoint.base_dn();
        let (base, scope, filter) = match login {
            Login::Dn(dn) => {
                let suffix = format!(",{}", base_dn.to_ascii_lowercase());
                let lower = dn.to_ascii_lowercase();
                // The comma must be a separator, not an escaped one (`\,`) inside a name.
                let escaped = lower.strip_suffix(&suffix).is_some_and(|head| {
                    head.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
                });
                if !lower.ends_with(&suffix) || escaped {
                    return Err(format!(
                        "the distinguished name '{}' is not under {base_dn}",
                        dn.escape_debug()
                    ));
                }
                (dn.to_string(), Scope::Base, PERSON.to_string())
            }
            // Also the account whose userPrincipalName is `sam@domain`, the name it binds as:
            // a login that names two accounts is refused before anything is sent.
            Login::Sam(sam) => (
                base_dn,
                Scope::Subtree,
                format!(
                    "(&{PERSON}(|(sAMAccountName={})(userPrincipalName={})))",
                    ldap3::ldap_escape(*sam),
                    ldap3::ldap_escape(self.endpoint.bind_name(login))
                ),
            ),
            Login::Principal(p) => (
                base_dn,
                Scope::Subtree,
                format!("(&{PERSON}(userPrincipalName={}))", ldap3::ldap_escape(*p)),
            ),
        };
        let search = ldap
            .with_search_options(ldap3::SearchOptions::new().sizelimit(2))
            .search(&base, scope, &filter, vec!["sAMAccountName"]);
        let found = tokio::time::timeout(self.timeouts.command, search)
            .await
            .map_err(|_| "searching for the account timed out".to_string())?
            .map_err(|e| clean(format!("searching for the account: {e}"), &[]))?;
        // A size limit reached (4) means more than one; any other error, an answer that may be
        // partial.
        let (entries, result) = (found.0, found.1);
        if !matches!(result.rc, 0 | 4) {
            return Err(clean(
                format!("searching for the account: {} ({})", result.text, result.rc),
                &[],
            ));
        }
        let mut entries = entries.into_iter();
        match (entries.next(), entries.next()) {
            (Some(one), None) => {
                let entry = SearchEntry::construct(one);
                // Found by its user principal name alone: `sam@domain` is another account.
                if let Login::Sam(sam) = login {
                    let same = entry
                        .attrs
                        .get("sAMAccountName")
                        .and_then(|v| v.first())
                        .is_some_and(|v| v.eq_ignore_ascii_case(sam));
                    if !same {
                        return Err(format!(
                            "'{}' is the user principal name of another account than '{sam}': \
                             name the account by its user principal name or distinguished name",
                            self.endpoint.bind_name(login)
                        ));
                    }
                }
                Ok(entry.dn)
            }
            (None, _) => Err(format!(
                "no user account '{}' in {}",
                self.endpoint.bind_name(login).escape_debug(),
                self.endpoint.base_dn()
            )),
            (Some(_), Some(_)) => Err(format!(
                "more than one user account matches '{}' (as a sAMAccountName or a user \
                 principal name): name the account by its distinguished name",
                self.endpoint.bind_name(login).escape_debug()
            )),
        }
    }
}

impl Connector for ActiveDirectoryConnector {
    fn label(&self) -> String {
        self.endpoint.label()
    }

    async fn apply(
        &self,
        admin: &Admin,
        login: &str,
        new: &Secret,
        keys: &dyn KeyRecorder,
    ) -> Result<(), ApplyFailure> {
        let account = login_of(login).map_err(ApplyFailure::Unrepresentable)?;
        let admin_login = login_of(&admin.login)
            .map_err(|e| ApplyFailure::Unrepresentable(format!("the admin account: {e}")))?;
        if new.is_empty() {
            return Err(ApplyFailure::Unrepresentable(
                "an empty password cannot be set in Active Directory".into(),
            ));
        }
        let value = unicode_pwd(new.expose());
        let target = self.label();
        let admin_name = self.endpoint.bind_name(&admin_login);
        let (bound, certificate) = self
            .bind(&admin_name, &admin.login, &admin.password)
            .await?;
        let mut ldap = match bound {
            Bound::Session(l) => l,
            Bound::RightButBlocked(words) => {
                return Err(ApplyFailure::NotSent(TargetFailure::Protocol {
                    target,
                    reason: format!(
                        "the admin account '{}' must set a new password before it can log in \
                         ({words}): set one on the domain and in the vault",
                        admin.login
                    ),
                }));
            }
        };
        keys.record(&TargetKey::TlsCertificate(certificate))
            .await
            .map_err(ApplyFailure::Unrepresentable)?;
        let dn = self
            .find(&mut ldap, &account)
            .await
            .map_err(|reason| ApplyFailure::Rejected {
                target: target.clone(),
                reason,
            })?;
        let change = vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([value.to_vec()]),
        )];
        let sent = tokio::time::timeout(self.timeouts.command, ldap.modify(&dn, change)).await;
        let secrets = [new.expose(), admin.password.expose()];
        let outcome = match sent {
            Ok(Ok(r)) if r.rc == 0 => Ok(()),
            // A directory applies a modify whole or not at all, but a proxy or load balancer
            // in front of it may answer "busy" or "other" after passing it on: only errors
            // raised while the change is checked prove nothing changed.
            Ok(Ok(r)) => {
                let reason = clean(format!("{} ({})", r.text, r.rc), &secrets);
                if r.rc == CONSTRAINT_VIOLATION && r.text.contains("0000052D") {
                    Err(ApplyFailure::PolicyRefused { target, reason })
                } else if checked_before_change(r.rc) {
                    Err(ApplyFailure::Rejected { target, reason })
                } else {
                    Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                        target,
                        reason,
                    }))
                }
            }
            Ok(Err(e)) => Err(ApplyFailure::Interrupted(TargetFailure::Protocol {
                target,
                reason: clean(e.to_string(), &secrets),
            })),
            Err(_) => Err(ApplyFailure::Interrupted(TargetFailure::Timeout {
                target,
                step: "the unicodePwd change",
                seconds: self.timeouts.command.as_secs(),
            })),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
        outcome
    }

    async fn accepts(&self, login: &str, password: &Secret) -> Result<bool, TargetFailure> {
        let target = self.label();
        let account = login_of(login).map_err(|reason| TargetFailure::Protocol {
            target: target.clone(),
            reason,
        })?;
        // A simple bind never proves who answered it: without the pinned certificate, anyone
        // in the DC's place could say "bound". (A reset pins it before it verifies.)
        if self.endpoint.pinned_certificate.is_none() {
            return Err(TargetFailure::Unprovable {
                target,
                user: login.to_string(),
                reason: "no TLS certificate is pinned for it, and a bind proves nothing without \
                         one: set tls_certificate in the resource's reset settings (or run a \
                         reset, which pins it at first use)"
                    .into(),
            });
        }
        let name = self.endpoint.bind_name(&account);
        let mut ldap = match self.bind(&name, login, password).await {
            Ok((Bound::Session(ldap), _)) => ldap,
            Ok((Bound::RightButBlocked(_), _)) => return Ok(true),
            Err(TargetFailure::AuthRejected { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // `sam@domain` binds as the account whose userPrincipalName it is, if one has it, and
        // only otherwise as the account of that sAMAccountName: the two must be one account.
        let one = match &account {
            Login::Sam(sam) => {
                let filter = format!(
                    "(&{PERSON}(|(sAMAccountName={})(userPrincipalName={})))",
                    ldap3::ldap_escape(*sam),
                    ldap3::ldap_escape(name.as_str())
                );
                let base = self.endpoint.base_dn();
                let search = ldap
                    .with_search_options(ldap3::SearchOptions::new().sizelimit(2))
                    .search(&base, Scope::Subtree, &filter, vec!["1.1"]);
                match tokio::time::timeout(self.timeouts.command, search).await {
                    // Exactly one entry by both rules: the bind was this account.
                    Ok(Ok(found)) if found.1.rc == 0 || found.1.rc == 4 => found.0.len() == 1,
                    // The DC could not answer now: asked again later, nothing concluded.
                    Ok(Ok(found)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
                        return Err(TargetFailure::Protocol {
                            target,
                            reason: clean(
                                format!(
                                    "checking the bound account: {} ({})",
                                    found.1.text, found.1.rc
                                ),
                                &[password.expose()],
                            ),
                        });
                    }
                    Ok(Err(e)) => {
                        return Err(TargetFailure::Protocol {
                            target,
                            reason: clean(format!("checking the bound account: {e}"), &[]),
                        });
                    }
                    Err(_) => {
                        return Err(TargetFailure::Timeout {
                            target,
                            step: "checking the bound account",
                            seconds: self.timeouts.command.as_secs(),
                        });
                    }
                }
            }
            Login::Principal(_) | Login::Dn(_) => true,
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
        if one {
            return Ok(true);
        }
        Err(TargetFailure::Unprovable {
            target,
            user: login.to_string(),
            reason: format!(
                "'{name}' may name another account (by its userPrincipalName) than the one whose \
                 sAMAccountName is '{login}', or the account cannot read its own entry: name it \
                 by its user principal name or distinguished name"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_domain_controller_over_tls_only() {
        assert_eq!(
            parse_url("ldaps://dc1.corp.example:3269").unwrap(),
            ("dc1.corp.example".into(), 3269)
        );
        assert_eq!(parse_url("ldaps://10.0.0.5").unwrap().1, 636);
        for bad in [
            "ldap://dc1",
            "ldaps://admin:pw@dc1",
            "ldaps://dc1/DC=corp",
            "ldaps://dc1?x",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn logins_name_one_account_and_bind_as_it() {
        let e = AdEndpoint::new(None, "10.0.0.5", Some("Corp.Example.COM"), None).unwrap();
        assert_eq!(e.base_dn(), "DC=corp,DC=example,DC=com");
        assert_eq!(
            e.bind_name(&login_of("svc_app").unwrap()),
            "svc_app@corp.example.com"
        );
        assert_eq!(login_of("a@b.c").unwrap(), Login::Principal("a@b.c"));
        assert_eq!(
            login_of("CN=App,OU=Svc,DC=corp").unwrap(),
            Login::Dn("CN=App,OU=Svc,DC=corp")
        );
        for bad in ["", " x", "a\nb", "CORP\\x"] {
            assert!(login_of(bad).is_err(), "{bad:?}");
        }
        assert!(AdEndpoint::new(None, "h", None, None).is_err());
        assert!(AdEndpoint::new(None, "h", Some("nodot"), None).is_err());
        assert!(AdEndpoint::new(None, "h", Some("a..b"), None).is_err());
    }

    #[test]
    fn ad_sub_codes_are_read_from_the_text() {
        let text = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, \
                    data 52e, v4563";
        assert_eq!(ad_data(text), Some("52e"));
        assert_eq!(ad_data("Invalid credentials"), None);
    }

    #[test]
    fn a_new_password_is_quoted_utf16() {
        assert_eq!(unicode_pwd("é").as_slice(), [b'"', 0, 0xE9, 0, b'"', 0]);
    }
}
