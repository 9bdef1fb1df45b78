//! The listener manifest: what a listener is and what it may do.
//!
//! Each listener version ships a TOML manifest; `examples/manifest.toml` in this crate is a
//! full, commented example. [`Manifest::parse`] rejects unknown fields and reports every broken
//! rule with its field path. The host grants a listener only what its manifest lists, through
//! the `allows_*` and `*_allowed` queries; deny is the default.
//!
//! Exec rules name a program and one pattern per argument. The program is started directly,
//! never through a shell, so shell syntax in a pattern is just text. A pattern is either an
//! exact literal, or a glob where each `*` matches any run of characters (possibly empty)
//! except `/` and whitespace, and never a whole path segment `.`, `..` or (in a path) an empty
//! one. There is no escape: a pattern without `*` is a literal.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Problem};
use crate::limits::{DELIVERY_AGE_SECS, MAX_DELIVERY_ATTEMPTS};
use crate::limits::{MAX_ARG_BYTES, MAX_ARGS, MAX_MEMORY_MIB, MAX_OUTPUT_KIB, MAX_TIMEOUT_MS};

/// Command runners: programs that run another program, a script or a command line named in
/// their arguments or read from their input (shells, interpreters, wrappers, debuggers, the
/// dynamic loader), by file name, compared case-insensitively and without a version suffix.
/// Never exec programs, and never arguments of a program outside [`NON_WRAPPING`].
const SHELLS: &str = "sh bash dash ash zsh ksh ksh93 mksh csh tcsh fish yash rbash elvish nu \
                      xonsh busybox toybox env pwsh powershell powershell.exe pwsh.exe cmd \
                      cmd.exe python pypy pypy3 ipython perl ruby irb node nodejs deno bun php \
                      php-cgi lua luajit awk gawk mawk nawk tclsh wish expect guile racket \
                      ocaml ghci runghc java jshell groovy scala kotlin julia r rscript erl \
                      escript dotnet mono osascript sed vi vim nvim ex ed emacs less more man \
                      git tar zip rsync scp sftp sqlite3 mysql psql make find xargs parallel \
                      sudo sudoedit su sux doas pkexec runuser please gosu su-exec setpriv sg \
                      newgrp capsh runcon chpst setuidgid softlimit envdir envuidgid nice \
                      ionice renice taskset chrt numactl cgexec prlimit cpulimit trickle \
                      nohup timeout setsid stdbuf unbuffer faketime eatmydata nocache flock \
                      watch entr chronic ifne vipe logsave time perf strace ltrace gdb lldb \
                      valgrind catchsegv setarch linux32 linux64 i386 x86_64 uname26 chroot \
                      nsenter unshare systemd-run systemd-nspawn systemd-cat machinectl \
                      firejail bwrap bubblewrap proot fakeroot fakechroot docker podman \
                      kubectl lxc-attach ssh ssh-agent gpg-agent dbus-launch dbus-run-session \
                      xvfb-run script screen tmux dtach abduco at batch crontab run-parts \
                      start-stop-daemon daemonize daemon tini dumb-init catatonit torsocks \
                      proxychains proxychains4 tsocks sshpass flatpak-spawn";

/// Programs known never to run a program named by an operand. Only these may take argument
/// patterns that could name a program (`*`, `app-*.service`); they must be bare command names
/// on the target or live in one of [`SYSTEM_BIN_DIRS`].
const NON_WRAPPING: &str = "systemctl passwd chage getent id groups whoami hostname uname \
                            date uptime true false echo printf cat head tail wc ls stat du df \
                            md5sum sha1sum sha256sum sha512sum grep cut sort uniq tr touch \
                            mkdir journalctl";

/// Where the programs of [`NON_WRAPPING`] are trusted to be themselves.
const SYSTEM_BIN_DIRS: [&str; 4] = ["/bin", "/sbin", "/usr/bin", "/usr/sbin"];

/// Directory names that hold programs: a path pattern through one could name a program.
const PROGRAM_DIR_NAMES: [&str; 6] = ["bin", "sbin", "libexec", "lib", "lib64", "lib32"];

/// A validated listener manifest. Built only by [`Manifest::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase kebab-case, 1 to 64 characters. Example: `name = "restart-service"`.
    name: String,
    /// MAJOR.MINOR.PATCH, numbers without leading zeros. Example: `version = "1.2.0"`.
    version: String,
    /// Optional, at most 1024 characters. Example: `description = "Restarts a service"`.
    description: Option<String>,
    /// When it runs; not empty. Example: `phases = ["post-reset"]`.
    phases: Vec<Phase>,
    /// Where it may run; not empty. Example: `modes = ["agentless", "agent"]`.
    modes: Vec<Mode>,
    /// Resource type names it serves; not empty. Example: `resource_types = ["Linux"]`.
    resource_types: Vec<String>,
    /// Values an administrator sets when attaching it, in display order. Example:
    /// `[[parameters]]` with `name = "service"`, `description = "Unit to restart"`.
    #[serde(default)]
    parameters: Vec<Parameter>,
    /// What it may touch; everything is denied when absent. Example: `[capabilities]`.
    #[serde(default)]
    capabilities: Capabilities,
    /// Resource limits; defaults apply when absent. Example: `[limits]`, `timeout_ms = 10000`.
    #[serde(default)]
    limits: Limits,
    /// How long a post-reset delivery is retried; defaults apply when absent. Example:
    /// `[delivery]`, `max_attempts = 8`, `max_age_secs = 3600`.
    #[serde(default)]
    delivery: Option<DeliveryLimits>,
}

/// Defines a kebab-case enum with `as_str`.
macro_rules! kebab_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $variant),+ }

        impl $name {
            /// The name as a manifest writes it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }
    };
}

kebab_enum!(
    /// When a listener runs relative to the reset.
    Phase {
        /// Before the password changes on the target. Example: `"pre-reset"`.
        PreReset = "pre-reset",
        /// After the password changed on the target. Example: `"post-reset"`.
        PostReset = "post-reset",
    }
);

kebab_enum!(
    /// Where a listener runs.
    Mode {
        /// On the server. Example: `"agentless"`.
        Agentless = "agentless",
        /// On the target's `lockstep-agent`. Example: `"agent"`.
        Agent = "agent",
        /// On a gateway. Example: `"gateway"`.
        Gateway = "gateway",
    }
);

kebab_enum!(
    /// A password a listener may read; each is a separate grant.
    Secret {
        /// The password before the reset. Example: `"old-password"`.
        OldPassword = "old-password",
        /// The password after the reset. Example: `"new-password"`.
        NewPassword = "new-password",
    }
);

kebab_enum!(
    /// The protocol of an outbound network grant.
    Scheme {
        /// Plain HTTP. Example: `"http://10.0.0.5:8080"`.
        Http = "http",
        /// HTTP over TLS. Example: `"https://api.example.com:443"`.
        Https = "https",
        /// A raw TCP connection. Example: `"tcp://db.example.com:5432"`.
        Tcp = "tcp",
    }
);

/// A value an administrator sets when attaching the listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// A letter, then lowercase letters, digits, `_` or `-`; at most 64. Example: `"service"`.
    pub name: String,
    /// What the value is for; not empty. Example: `"systemd unit to restart"`.
    pub description: String,
    /// Whether attaching needs a value; default false. Example: `required = true`.
    #[serde(default)]
    pub required: bool,
}

/// What a listener may touch. Every list is empty (nothing granted) by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Property keys it may read: `[A-Z0-9_]+`, never a password. Example:
    /// `props = ["RESOURCENAME", "IPADDRESS", "LOGINNAME"]`.
    pub props: Vec<String>,
    /// Passwords it may read. Example: `secrets = ["new-password"]`.
    pub secrets: Vec<Secret>,
    /// Programs it may run where it runs. Example: `[[capabilities.exec]]` with
    /// `program = "/usr/bin/systemctl"`, `args = ["restart", "*.service"]`.
    pub exec: Vec<ExecRule>,
    /// Commands it may run on the reset target over the reset's own connection; the program
    /// is an absolute path or a command name. The host must quote each argument for the
    /// remote side, since an SSH command passes through the account's shell. Example:
    /// `[[capabilities.target_exec]]` with `program = "systemctl"`, `args = ["restart", "*"]`.
    pub target_exec: Vec<ExecRule>,
    /// Outbound connections as `scheme://host:port`, scheme `http`, `https` or `tcp`; no
    /// wildcards, paths or DNS beyond these hosts. Example:
    /// `network = ["https://api.example.com:443"]`.
    pub network: Vec<String>,
    /// Absolute host directories it may read (never write). Example: `dirs = ["/etc/ssl/certs"]`.
    pub dirs: Vec<String>,
}

/// One program and the argument lists it may be run with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    /// An absolute path (on the target, a bare command name also works); never a shell.
    /// Example: `program = "/usr/bin/systemctl"`.
    pub program: String,
    /// One pattern per argument (see the module docs); default none. Example:
    /// `args = ["restart", "app-*.service"]`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// Resource limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit in milliseconds, 1 to 60000; default 5000. Example: `timeout_ms = 10000`.
    pub timeout_ms: u64,
    /// Memory limit in MiB, 1 to 1024; default 64. Example: `memory_mib = 128`.
    pub memory_mib: u64,
    /// Cap on captured output (logs, program output) in KiB, 1 to 1024; default 64.
    /// Example: `output_kib = 256`.
    pub output_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 5000,
            memory_mib: 64,
            output_kib: 64,
        }
    }
}

/// How long the host keeps delivering one post-reset run: it is run again (with a growing,
/// jittered pause) while the listener answers `retry` (contract 0.2.0) or the server stopped
/// while it ran, until either limit is reached; then it is a dead letter, for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryLimits {
    /// Runs at most, the first included, 1 to 100; default 5. Example: `max_attempts = 8`.
    pub max_attempts: u32,
    /// Seconds after the reset's commit after which no new attempt starts, 60 to 604800
    /// (a week); default 86400. Example: `max_age_secs = 3600`.
    pub max_age_secs: u64,
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        DeliveryLimits {
            max_attempts: 5,
            max_age_secs: 86_400,
        }
    }
}

/// A parsed network grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The protocol.
    pub scheme: Scheme,
    /// Lowercase DNS name or IP address; IPv6 without brackets.
    pub host: String,
    /// The port, 1 to 65535.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why a program run was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No rule names the program.
    Program {
        /// The grant consulted: `capabilities.exec` or `capabilities.target_exec`.
        grant: &'static str,
        /// The program asked for.
        program: String,
    },
    /// Rules name the program, but none matches the arguments.
    Arguments {
        /// The grant consulted.
        grant: &'static str,
        /// The program asked for.
        program: String,
        /// The arguments asked for.
        args: Vec<String>,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Program { grant, program } => {
                write!(f, "{grant}: '{program}' is not granted")
            }
            Denial::Arguments {
                grant,
                program,
                args,
            } => write!(
                f,
                "{grant}: '{program}' is not granted with arguments {args:?}"
            ),
        }
    }
}

impl std::error::Error for Denial {}

impl Manifest {
    /// Parses and validates a manifest. Shape errors stop at the first one
    /// ([`Error::Syntax`]); rule errors are all collected ([`Error::Invalid`]).
    pub fn parse(text: &str) -> Result<Manifest, Error> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let problems = manifest.problems();
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The listener's version, `MAJOR.MINOR.PATCH`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The phases, as declared.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// The execution modes, as declared.
    pub fn modes(&self) -> &[Mode] {
        &self.modes
    }

    /// The resource types, as declared.
    pub fn resource_types(&self) -> &[String] {
        &self.resource_types
    }

    /// The parameters, in declared order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// The capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The limits, defaults filled in.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The delivery limits, defaults filled in.
    pub fn delivery(&self) -> DeliveryLimits {
        self.delivery.unwrap_or_default()
    }

    /// The network grants, parsed.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let parsed = self.capabilities.network.iter().map(|n| parse_endpoint(n));
        parsed.filter_map(Result::ok).collect()
    }

    /// Whether the listener may read property `key` (exact, case-sensitive).
    pub fn allows_prop(&self, key: &str) -> bool {
        self.capabilities.props.iter().any(|p| p == key)
    }

    /// Whether the listener may read `secret`.
    pub fn allows_secret(&self, secret: Secret) -> bool {
        self.capabilities.secrets.contains(&secret)
    }

    /// Whether the listener may connect to `scheme://host:port`. Scheme and port must match
    /// exactly; the host case-insensitively (IPv6 with or without brackets).
    pub fn allows_network(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = bare.unwrap_or(host);
        self.endpoints()
            .iter()
            .any(|e| e.scheme == scheme && e.port == port && e.host.eq_ignore_ascii_case(host))
    }

    /// Checks a run of `program` (exact path) with `args` against `capabilities.exec`: some
    /// rule for the program must have one pattern per argument, each matching.
    pub fn exec_allowed(&self, program: &str, args: &[impl AsRef<str>]) -> Result<(), Denial> {
        rules_allow("capabilities.exec", &self.capabilities.exec, program, args)
    }

    /// Like [`Manifest::exec_allowed`], for commands run on the reset target.
    pub fn target_exec_allowed(
        &self,
        program: &str,
        args: &[impl AsRef<str>],
    ) -> Result<(), Denial> {
        let rules = &self.capabilities.target_exec;
        rules_allow("capabilities.target_exec", rules, program, args)
    }

    /// The canonical bytes that are signed and approved: JSON with object keys sorted (by
    /// byte value) at every level, no whitespace, every field present with defaults filled
    /// in (`null` for no description). Lists keep their declared order, except the set-like
    /// `phases`, `modes`, `resource_types`, `capabilities.props` and `capabilities.secrets`,
    /// which are sorted and deduplicated. Network grants are written as parsed (lowercase
    /// host, port without leading zeros). So two manifests that mean the same thing give the
    /// same bytes, whatever their TOML layout, key order or comments. One exception to "every
    /// field present": `delivery` (added after the first release) is present only when the
    /// manifest has a `[delivery]` table, so every manifest signed before it keeps its digest.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        lockstep_canonical_json::to_string(&self.canonical_value()).into_bytes()
    }

    /// Lowercase hex SHA-256 of [`Manifest::canonical_bytes`].
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    fn canonical_value(&self) -> Value {
        // Destructured without `..`, so a new field cannot be left out of what is signed.
        let Manifest {
            name,
            version,
            description,
            phases,
            modes,
            resource_types,
            parameters,
            capabilities,
            limits,
            delivery,
        } = self;
        let Capabilities {
            props,
            secrets,
            exec,
            target_exec,
            network,
            dirs,
        } = capabilities;
        let Limits {
            timeout_ms,
            memory_mib,
            output_kib,
        } = *limits;
        let rule = |r: &ExecRule| {
            let ExecRule { program, args } = r;
            let args: Value = args.iter().map(String::as_str).collect();
            object([("program", program.as_str().into()), ("args", args)])
        };
        let parameter = |p: &Parameter| {
            let Parameter {
                name,
                description,
                required,
            } = p;
            object([
                ("name", name.as_str().into()),
                ("description", description.as_str().into()),
                ("required", (*required).into()),
            ])
        };
        let network = network.iter().map(|n| match parse_endpoint(n) {
            Ok(endpoint) => endpoint.to_string(),
            Err(_) => n.clone(),
        });
        let mut canonical = object([
            ("name", name.as_str().into()),
            ("version", version.as_str().into()),
            ("description", description.as_deref().into()),
            ("phases", set(phases.iter().map(|p| p.as_str()))),
            ("modes", set(modes.iter().map(|m| m.as_str()))),
            (
                "resource_types",
                set(resource_types.iter().map(String::as_str)),
            ),
            ("parameters", parameters.iter().map(parameter).collect()),
            (
                "capabilities",
                object([
                    ("props", set(props.iter().map(String::as_str))),
                    ("secrets", set(secrets.iter().map(|s| s.as_str()))),
                    ("exec", exec.iter().map(rule).collect()),
                    ("target_exec", target_exec.iter().map(rule).collect()),
                    ("network", network.collect()),
                    ("dirs", dirs.iter().map(String::as_str).collect()),
                ]),
            ),
            (
                "limits",
                object([
                    ("timeout_ms", timeout_ms.into()),
                    ("memory_mib", memory_mib.into()),
                    ("output_kib", output_kib.into()),
                ]),
            ),
        ]);
        if let Some(DeliveryLimits {
            max_attempts,
            max_age_secs,
        }) = *delivery
        {
            canonical["delivery"] = object([
                ("max_attempts", max_attempts.into()),
                ("max_age_secs", max_age_secs.into()),
            ]);
        }
        canonical
    }

    /// Every broken rule, in field order.
    fn problems(&self) -> Vec<Problem> {
        let caps = &self.capabilities;
        let long = self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024);
        let mut checks = vec![
            ("name".to_string(), check_name(&self.name)),
            ("version".to_string(), check_version(&self.version)),
            (
                "description".to_string(),
                fail(long, "is longer than 1024 characters".into()),
            ),
            ("phases".to_string(), non_empty(&self.phases, PHASES)),
            ("modes".to_string(), non_empty(&self.modes, MODES)),
            (
                "resource_types".to_string(),
                non_empty(&self.resource_types, TYPES),
            ),
        ];
        let types = self.resource_types.iter().map(|t| check_resource_type(t));
        checks.extend(indexed("resource_types", types));
        for (i, p) in self.parameters.iter().enumerate() {
            let twice = self.parameters[..i].iter().any(|q| q.name == p.name);
            checks.push((
                format!("parameters[{i}].name"),
                check_parameter(&p.name, twice),
            ));
            let empty = fail(p.description.trim().is_empty(), NO_DESCRIPTION.into());
            checks.push((format!("parameters[{i}].description"), empty));
        }
        checks.extend(indexed(
            "capabilities.props",
            caps.props.iter().map(|k| check_prop(k)),
        ));
        for (grant, rules) in [("exec", &caps.exec), ("target_exec", &caps.target_exec)] {
            for (i, rule) in rules.iter().enumerate() {
                let field = format!("capabilities.{grant}[{i}]");
                let program = check_program(&rule.program, grant == "target_exec");
                checks.push((format!("{field}.program"), program));
                let wraps = !is_non_wrapping(&rule.program);
                let args = rule.args.iter().map(|a| {
                    fail(has_control(a), CONTROL_ARG.into())?;
                    if wraps {
                        check_operand(&rule.program, a)
                    } else {
                        Ok(())
                    }
                });
                checks.extend(indexed(&format!("{field}.args"), args));
            }
        }
        let network = caps.network.iter().map(|n| parse_endpoint(n).map(drop));
        checks.extend(indexed("capabilities.network", network));
        checks.extend(indexed(
            "capabilities.dirs",
            caps.dirs.iter().map(|d| check_dir(d)),
        ));
        let limits = [
            ("timeout_ms", self.limits.timeout_ms, MAX_TIMEOUT_MS),
            ("memory_mib", self.limits.memory_mib, MAX_MEMORY_MIB),
            ("output_kib", self.limits.output_kib, MAX_OUTPUT_KIB),
        ];
        for (field, value, max) in limits {
            checks.push((format!("limits.{field}"), check_limit(value, max)));
        }
        let delivery = self.delivery();
        checks.push((
            "delivery.max_attempts".into(),
            check_limit(delivery.max_attempts.into(), MAX_DELIVERY_ATTEMPTS.into()),
        ));
        let (low, high) = (*DELIVERY_AGE_SECS.start(), *DELIVERY_AGE_SECS.end());
        checks.push((
            "delivery.max_age_secs".into(),
            fail(
                !DELIVERY_AGE_SECS.contains(&delivery.max_age_secs),
                format!(
                    "{} is out of range; use a value from {low} to {high}",
                    delivery.max_age_secs
                ),
            ),
        ));
        let problem = |(field, result): (String, Result<(), String>)| {
            result.err().map(|problem| Problem { field, problem })
        };
        checks.into_iter().filter_map(problem).collect()
    }
}

const PHASES: &str = "list at least one of 'pre-reset', 'post-reset'";
const MODES: &str = "list at least one of 'agentless', 'agent', 'gateway'";
const TYPES: &str = "list the resource types it serves, e.g. 'Linux'";
const NO_DESCRIPTION: &str = "is empty; say what the value is for";
const CONTROL_ARG: &str = "has a control character; arguments are single-line text";

/// Field paths `field[i]` for a list's results.
fn indexed(
    field: &str,
    results: impl Iterator<Item = Result<(), String>>,
) -> impl Iterator<Item = (String, Result<(), String>)> {
    results
        .enumerate()
        .map(move |(i, r)| (format!("{field}[{i}]"), r))
}

fn non_empty<T>(list: &[T], hint: &str) -> Result<(), String> {
    fail(list.is_empty(), format!("is empty; {hint}"))
}

/// Finds a rule for `program` whose patterns match `args`.
fn rules_allow(
    grant: &'static str,
    rules: &[ExecRule],
    program: &str,
    args: &[impl AsRef<str>],
) -> Result<(), Denial> {
    let mut named = rules.iter().filter(|r| r.program == program).peekable();
    if named.peek().is_none() {
        let program = program.to_string();
        return Err(Denial::Program { grant, program });
    }
    // Oversized or multi-line input is refused before any matching (which costs pattern
    // length × argument length).
    let unusable = args.len() > MAX_ARGS
        || args
            .iter()
            .any(|a| a.as_ref().len() > MAX_ARG_BYTES || a.as_ref().chars().any(char::is_control))
        || program.len() > MAX_ARG_BYTES;
    if unusable {
        // The program whole: whoever shows the denial redacts it before cutting it (the
        // host's denial records, `Redactor::clean`).
        return Err(Denial::Arguments {
            grant,
            program: program.to_string(),
            args: vec![format!(
                "{} argument(s) refused: too many, too long, or with control characters",
                args.len()
            )],
        });
    }
    let matches = |r: &ExecRule| {
        r.args.len() == args.len()
            && r.args
                .iter()
                .zip(args)
                .all(|(p, a)| glob_match(p, a.as_ref()))
    };
    if named.any(matches) {
        return Ok(());
    }
    let args = args.iter().map(|a| a.as_ref().to_string()).collect();
    let program = program.to_string();
    Err(Denial::Arguments {
        grant,
        program,
        args,
    })
}

/// Matches `text` against `pattern`, where `*` matches any run of characters except `/`,
/// whitespace and control characters, and every other character matches itself. A text that
/// starts with `-` matches only a pattern that starts with a literal `-`, so a `*` meant for a
/// value can never smuggle in an option (`passwd -S *` does not allow `passwd -S -a`).
///
/// A `*` never completes a path segment that is `.` or `..` (`/srv/data/*` does not admit
/// `/srv/data/..`), nor an empty segment of a path (`/srv/data/*/x` does not admit
/// `/srv/data//x`, which is `/srv/data/x`). A literal `.` or `..` is the grant's own.
fn glob_match(pattern: &str, text: &str) -> bool {
    if text.starts_with('-') && !pattern.starts_with('-') {
        return false;
    }
    // `*` never matches '/', so pattern and text have the same segments, pairwise.
    let (patterns, texts): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), text.split('/').collect());
    if patterns.len() != texts.len() {
        return false;
    }
    let path = texts.len() > 1;
    patterns.iter().zip(&texts).all(|(p, t)| {
        let dots = *t == "." || *t == ".." || (path && t.is_empty());
        !(p.contains('*') && dots) && segment_match(p, t)
    })
}

/// Matches one path segment (no '/') against a pattern segment, `*` as in [`glob_match`].
fn segment_match(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    // reach[j]: the pattern read so far matches the first j characters of the text.
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for pc in pattern.chars() {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match (pc, j.checked_sub(1).map(|k| text[k])) {
                ('*', None) => reach[j],
                ('*', Some(c)) => {
                    reach[j] || (next[j - 1] && c != '/' && !c.is_whitespace() && !c.is_control())
                }
                (_, Some(c)) => reach[j - 1] && c == pc,
                (_, None) => false,
            };
        }
        reach = next;
    }
    reach[text.len()]
}

/// A program's file name, lowercased, and that name without a version suffix (`python3.11`
/// gives `python`).
fn program_names(program: &str) -> (String, String) {
    let file = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .to_ascii_lowercase();
    let base = file
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
        .to_string();
    (file, base)
}

/// Whether `program` is a command runner (see [`SHELLS`]); the dynamic loader counts too.
fn is_command_runner(program: &str) -> bool {
    let (file, base) = program_names(program);
    file.starts_with("ld-")
        || file.starts_with("ld.so")
        || SHELLS.split_whitespace().any(|s| s == file || s == base)
}

/// Whether `program` is one of [`NON_WRAPPING`], where it is trusted to be itself.
fn is_non_wrapping(program: &str) -> bool {
    let (dir, file) = program.rsplit_once('/').unwrap_or(("", program));
    let trusted_dir = !program.contains('/') || SYSTEM_BIN_DIRS.contains(&dir);
    trusted_dir && NON_WRAPPING.split_whitespace().any(|n| n == file)
}

/// Checks an argument pattern of a program that is not known to leave its operands alone:
/// a literal must not name a command runner, and a `*` only fills in a file name under an
/// absolute directory that does not hold programs.
fn check_operand(program: &str, pattern: &str) -> Result<(), String> {
    let hint = "grant the program it would run directly, with its own argument patterns";
    let Some(star) = pattern.find('*') else {
        let problem = format!("'{pattern}' names a command runner; '{program}' must not start one");
        return fail(is_command_runner(pattern), format!("{problem}; {hint}"));
    };
    let dir = &pattern[..pattern[..star].rfind('/').unwrap_or(0)];
    let program_dir = dir.split('/').any(|s| PROGRAM_DIR_NAMES.contains(&s));
    let is_file = pattern.starts_with('/') && !dir.is_empty() && !program_dir;
    let problem = format!(
        "'{pattern}' could name a program, and '{program}' is not known to leave its operands \
         alone; use literal arguments, or a '*' only in a file name under a data directory \
         (e.g. '/var/log/app-*.log')"
    );
    fail(!is_file, problem)
}

/// Checks an exec program: absolute (or, on the target, a bare command name) and not a
/// command runner.
fn check_program(program: &str, on_target: bool) -> Result<(), String> {
    let command_char = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    let is_command_name = only(program, command_char) && !program.starts_with(['-', '.']);
    if !(on_target && is_command_name) {
        check_path(program, "/usr/bin/systemctl")?;
    }
    let hint = "grant each program it would run directly, with its own argument patterns";
    let problem = format!("'{program}' can run any command, like a shell; {hint}");
    fail(is_command_runner(program), problem)
}

/// Checks an absolute path without `..` or control characters.
fn check_path(path: &str, example: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        let hint = format!("write the full path, e.g. '{example}'");
        Err(format!("'{path}' is not an absolute path; {hint}"))
    } else if path.split('/').any(|part| part == "..") {
        Err(format!("'{path}' contains '..'; write the path without it"))
    } else if has_control(path) {
        Err(format!("'{path}' has a control character"))
    } else {
        Ok(())
    }
}

/// Parses `scheme://host:port`, explaining what is wrong in the problem's words.
fn parse_endpoint(entry: &str) -> Result<Endpoint, String> {
    const PORTS: &str = "use a number from 1 to 65535";
    const SCHEMES: &str = "use http, https or tcp";
    let form = "write it as scheme://host:port";
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(format!("'{entry}' has no scheme; {form}"));
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "tcp" => Scheme::Tcp,
        _ => return Err(format!("'{entry}' has scheme '{scheme}'; {SCHEMES}")),
    };
    if rest.contains(['/', '?', '#']) {
        let hint = "grants are by scheme://host:port only, so drop what follows the port";
        return Err(format!("'{entry}' has a path; {hint}"));
    }
    if rest.contains('@') {
        return Err(format!("'{entry}' has user information; {form}"));
    }
    if rest.contains('*') {
        return Err(format!("'{entry}' has a wildcard; list each host by name"));
    }
    let (host, port, ipv6) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':'), true),
            None => return Err(format!("'{entry}' has an unclosed '['; {form}")),
        },
        None => match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                let hint = "write IPv6 addresses in brackets, e.g. tcp://[2001:db8::1]:22";
                return Err(format!("'{entry}' has IPv6 without brackets; {hint}"));
            }
            Some((host, port)) => (host, Some(port), false),
            None => (rest, None, false),
        },
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("'{entry}' has no host; {form}"));
    }
    let host_ok = if ipv6 {
        only(&host, |c| c.is_ascii_hexdigit() || ":.".contains(c))
    } else {
        only(&host, |c| c.is_ascii_alphanumeric() || "-.".contains(c))
    };
    if !host_ok {
        let hint = "use a DNS name or an IP address";
        return Err(format!("'{entry}' has a malformed host; {hint}"));
    }
    let port_text = match port {
        Some(p) if !p.is_empty() => p,
        _ => return Err(format!("'{entry}' has no port; {form}")),
    };
    match port_text.parse::<u16>() {
        Ok(port) if port > 0 && is_digits(port_text) => Ok(Endpoint { scheme, host, port }),
        _ => Err(format!("'{entry}' has port '{port_text}'; {PORTS}")),
    }
}

/// `Err(problem)` when `bad`.
fn fail(bad: bool, problem: String) -> Result<(), String> {
    if bad { Err(problem) } else { Ok(()) }
}

fn check_name(name: &str) -> Result<(), String> {
    let word = |part: &str| only(part, |c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let kebab = starts_with_letter && name.split('-').all(word);
    let hint = "use letters a-z, digits and single hyphens, starting with a letter, \
                e.g. 'restart-service'";
    let long = format!("'{name}' is longer than 64 characters");
    fail(name.len() > 64, long)?;
    fail(
        !kebab,
        format!("'{name}' is not lowercase kebab-case; {hint}"),
    )
}

/// `MAJOR.MINOR.PATCH`: three numbers without leading zeros that fit a u64.
fn check_version(version: &str) -> Result<(), String> {
    let parts: Vec<&str> = version.split('.').collect();
    let number =
        |p: &&str| is_digits(p) && (*p == "0" || !p.starts_with('0')) && p.parse::<u64>().is_ok();
    let ok = parts.len() == 3 && parts.iter().all(number);
    let hint = "write three numbers, e.g. '1.2.0'";
    fail(!ok, format!("'{version}' is not MAJOR.MINOR.PATCH; {hint}"))
}

fn check_resource_type(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    let bad = len == 0 || len > 64 || name.trim() != name || has_control(name);
    let hint = "use 1 to 64 printable characters without leading or trailing spaces";
    fail(bad, format!("'{name}' is not a resource type name; {hint}"))
}

fn check_parameter(name: &str, twice: bool) -> Result<(), String> {
    let ok = only(name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)
    }) && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 64;
    let hint = "start with a letter, then use a-z, 0-9, '_' or '-', at most 64";
    fail(!ok, format!("'{name}' is not a parameter name; {hint}"))?;
    let hint = "give each parameter its own name";
    fail(twice, format!("'{name}' is declared twice; {hint}"))
}

fn check_prop(key: &str) -> Result<(), String> {
    let upper = key.to_uppercase();
    let secret = ["PASSWORD", "PASSWD", "SECRET", "PASSPHRASE"]
        .iter()
        .any(|s| upper.contains(s));
    let hint = "grant it in capabilities.secrets as 'old-password' or 'new-password'";
    let problem = format!("'{key}' is a secret, not a property; {hint}");
    fail(secret, problem)?;
    let ok = only(key, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
    });
    let ok = ok && key.len() <= 64;
    let hint = "keys are 1 to 64 of A-Z, 0-9 and '_', e.g. 'IPADDRESS'";
    fail(!ok, format!("'{key}' is not a property key; {hint}"))
}

fn check_dir(dir: &str) -> Result<(), String> {
    check_path(dir, "/etc/ssl/certs")?;
    let hint = "grant the directory the listener needs";
    let root = dir.trim_end_matches('/').is_empty();
    fail(
        root,
        format!("'/' would expose the whole file system; {hint}"),
    )
}

fn check_limit(value: u64, max: u64) -> Result<(), String> {
    let hint = format!("use a value from 1 to {max}");
    fail(value == 0, format!("0 is below the minimum; {hint}"))?;
    fail(value > max, format!("{value} is over the maximum; {hint}"))
}

/// Whether `s` is not empty and every character passes `ok`.
fn only(s: &str, ok: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(ok)
}

fn is_digits(s: &str) -> bool {
    only(s, |c| c.is_ascii_digit())
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Turns a TOML error into a one-line [`Error::Syntax`] with its line and column.
fn syntax_error(text: &str, err: &toml::de::Error) -> Error {
    let at = err.span().map_or(0, |span| span.start);
    let before = text.get(..at).unwrap_or(text);
    let last_line = before.rsplit('\n').next().unwrap_or_default();
    Error::Syntax {
        line: before.matches('\n').count() + 1,
        column: last_line.chars().count() + 1,
        message: err.message().trim().to_string(),
    }
}

/// A sorted, deduplicated JSON array of strings.
fn set<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let mut items: Vec<&str> = items.collect();
    items.sort_unstable();
    items.dedup();
    items.into_iter().collect()
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.map(|(k, v)| (k.into(), v)).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "restart-service"
version = "1.0.0"
phases = ["post-reset"]
modes = ["agentless"]
resource_types = ["Linux"]
"#;

    fn example() -> Manifest {
        Manifest::parse(include_str!("../examples/manifest.toml")).unwrap()
    }

    /// MINIMAL followed by `extra`, parsed.
    fn with(extra: &str) -> Result<Manifest, Error> {
        Manifest::parse(&format!("{MINIMAL}{extra}"))
    }

    /// The problems `text` has, as displayed.
    fn problems(text: &str) -> Vec<String> {
        match Manifest::parse(text) {
            Err(Error::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn the_commented_example_parses() {
        let m = example();
        assert_eq!((m.name(), m.version()), ("app-credential-sync", "1.4.0"));
        assert_eq!(
            (m.phases(), m.modes()),
            (&[Phase::PostReset][..], &[Mode::Agentless, Mode::Agent][..])
        );
        assert_eq!(m.resource_types(), ["Linux", "Mac"]);
        let params: Vec<_> = m
            .parameters()
            .iter()
            .map(|p| (&*p.name, p.required))
            .collect();
        assert_eq!(params, [("service", true), ("api-base", false)]);
        assert_eq!((m.limits().timeout_ms, m.limits().output_kib), (10000, 128));
        assert!(m.allows_prop("IPADDRESS") && !m.allows_prop("LOCATION"));
        assert!(m.allows_secret(Secret::NewPassword) && !m.allows_secret(Secret::OldPassword));
        assert_eq!(m.capabilities().dirs, ["/etc/ssl/certs"]);
    }

    #[test]
    fn a_minimal_manifest_gets_defaults_and_grants_nothing() {
        let m = with("").unwrap();
        assert_eq!(m.description(), None);
        assert_eq!(
            (
                m.limits().timeout_ms,
                m.limits().memory_mib,
                m.limits().output_kib
            ),
            (5000, 64, 64)
        );
        assert_eq!(m.capabilities(), &Capabilities::default());
        assert!(!m.allows_prop("RESOURCENAME") && !m.allows_secret(Secret::OldPassword));
        assert!(!m.allows_network(Scheme::Https, "example.com", 443));
        let denied = m.exec_allowed("/usr/bin/true", &[""; 0]).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "capabilities.exec: '/usr/bin/true' is not granted"
        );
    }

    #[test]
    fn unknown_fields_stop_parsing_with_their_line() {
        let err = with("colour = \"blue\"\n").unwrap_err().to_string();
        assert!(err.starts_with("manifest line 7, column 1: unknown field `colour`, expected"));
        let err = with("[limits]\ncpu_ms = 5\n").unwrap_err().to_string();
        assert!(err.starts_with("manifest line 8, column 1: unknown field `cpu_ms`, expected"));
        let err = with("[[capabilities.exec]]\nprogram = \"/bin/ls\"\nargv = []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `argv`"), "{err}");
        let err = with("[capabilities]\nsecrets = [\"password\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variant `password`, expected `old-password` or"),
            "{err}"
        );
    }

    #[test]
    fn each_bad_input_gets_its_own_message() {
        let shell = "can run any command, like a shell; grant each program it would run \
                     directly, with its own argument patterns";
        let exec = |section: &str, program: &str| {
            format!("[[capabilities.{section}]]\nprogram = \"{program}\"")
        };
        let net = |entry: &str| format!("[capabilities]\nnetwork = [\"tcp://ok:1\", \"{entry}\"]");
        let (e0, t0, n1) = (
            "capabilities.exec[0].program",
            "capabilities.target_exec[0].program",
            "capabilities.network[1]",
        );
        let form = "write it as scheme://host:port";
        let cases = [
            (
                exec("exec", "systemctl"),
                format!(
                    "{e0}: 'systemctl' is not an absolute path; \
                 write the full path, e.g. '/usr/bin/systemctl'"
                ),
            ),
            (
                exec("exec", "/usr/bin/../bin/rm"),
                format!("{e0}: '/usr/bin/../bin/rm' contains '..'; write the path without it"),
            ),
            (
                exec("exec", "/bin/bash"),
                format!("{e0}: '/bin/bash' {shell}"),
            ),
            (
                exec("exec", "/usr/bin/env"),
                format!("{e0}: '/usr/bin/env' {shell}"),
            ),
            (exec("target_exec", "sh"), format!("{t0}: 'sh' {shell}")),
            (
                net("http://x"),
                format!("{n1}: 'http://x' has no port; {form}"),
            ),
            (
                net("https://x.example:443/v1?a=b"),
                format!(
                    "{n1}: 'https://x.example:443/v1?a=b' has a path; \
                 grants are by scheme://host:port only, so drop what follows the port"
                ),
            ),
            (
                net("https://*.example:443"),
                format!("{n1}: 'https://*.example:443' has a wildcard; list each host by name"),
            ),
            (
                net("ftp://x:21"),
                format!("{n1}: 'ftp://x:21' has scheme 'ftp'; use http, https or tcp"),
            ),
            (
                net("tcp://x:70000"),
                format!("{n1}: 'tcp://x:70000' has port '70000'; use a number from 1 to 65535"),
            ),
            (
                net("tcp://:22"),
                format!("{n1}: 'tcp://:22' has no host; {form}"),
            ),
            (
                net("tcp://::1:22"),
                format!(
                    "{n1}: 'tcp://::1:22' has IPv6 without brackets; \
                 write IPv6 addresses in brackets, e.g. tcp://[2001:db8::1]:22"
                ),
            ),
            (
                "[capabilities]\nprops = [\"PASSWORD\"]".into(),
                "capabilities.props[0]: 'PASSWORD' is a secret, not a property; \
                 grant it in capabilities.secrets as 'old-password' or 'new-password'"
                    .into(),
            ),
            (
                "[capabilities]\nprops = [\"ip\"]".into(),
                "capabilities.props[0]: 'ip' is not a property key; \
                 keys are 1 to 64 of A-Z, 0-9 and '_', e.g. 'IPADDRESS'"
                    .into(),
            ),
            (
                "[capabilities]\ndirs = [\"/\"]".into(),
                "capabilities.dirs[0]: '/' would expose the whole file system; \
                 grant the directory the listener needs"
                    .into(),
            ),
            (
                "[limits]\ntimeout_ms = 120000".into(),
                "limits.timeout_ms: 120000 is over the maximum; use a value from 1 to 60000".into(),
            ),
            (
                "[limits]\nmemory_mib = 2048".into(),
                "limits.memory_mib: 2048 is over the maximum; use a value from 1 to 1024".into(),
            ),
            (
                "[limits]\noutput_kib = 0".into(),
                "limits.output_kib: 0 is below the minimum; use a value from 1 to 1024".into(),
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(problems(&format!("{MINIMAL}{extra}\n")), [expected]);
        }
        let max = "[limits]\ntimeout_ms = 60000\nmemory_mib = 1024\noutput_kib = 1024\n";
        assert!(with(max).is_ok());
        assert!(with("[[capabilities.target_exec]]\nprogram = \"passwd\"\n").is_ok());
    }

    #[test]
    fn versions_and_names_are_checked_by_hand() {
        let hint = "is not MAJOR.MINOR.PATCH; write three numbers, e.g. '1.2.0'";
        for bad in [
            "1.0",
            "01.0.0",
            "1.0.0-beta",
            "1..0",
            "v1.0.0",
            "1.0.99999999999999999999",
        ] {
            let p = problems(&MINIMAL.replace("1.0.0", bad));
            assert_eq!(p, [format!("version: '{bad}' {hint}")]);
        }
        assert!(Manifest::parse(&MINIMAL.replace("1.0.0", "10.0.30")).is_ok());
        for bad in [
            "Restart",
            "restart--service",
            "-restart",
            "9lives",
            "a_b",
            "restart-",
        ] {
            let p = problems(&MINIMAL.replace("restart-service", bad));
            assert!(p[0].starts_with(&format!("name: '{bad}' is not lowercase kebab-case;")));
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
name = "Bad Name"
version = "1"
phases = []
modes = []
resource_types = [" Linux"]
parameters = [{ name = "host", description = "" }, { name = "host", description = "again" }]
[capabilities]
dirs = ["/", "etc"]
"#;
        let Err(Error::Invalid(problems)) = Manifest::parse(text) else {
            panic!("no problems")
        };
        let fields: Vec<&str> = problems.iter().map(|p| &*p.field).collect();
        let expected = [
            "name",
            "version",
            "phases",
            "modes",
            "resource_types[0]",
            "parameters[0].description",
            "parameters[1].name",
            "capabilities.dirs[0]",
            "capabilities.dirs[1]",
        ];
        assert_eq!(fields, expected);
        let shown = Error::Invalid(problems).to_string();
        assert_eq!(shown.lines().count(), 9);
        assert!(shown.starts_with("name: 'Bad Name' is not lowercase kebab-case;"));
    }

    #[test]
    fn canonical_bytes_have_a_fixed_form() {
        let m = with("[[capabilities.exec]]\nprogram = \"/bin/ls\"\nargs = [\"-l\"]\n").unwrap();
        let expected = concat!(
            r#"{"capabilities":{"dirs":[],"exec":[{"args":["-l"],"program":"/bin/ls"}],"#,
            r#""network":[],"props":[],"secrets":[],"target_exec":[]},"description":null,"#,
            r#""limits":{"memory_mib":64,"output_kib":64,"timeout_ms":5000},"#,
            r#""modes":["agentless"],"name":"restart-service","parameters":[],"#,
            r#""phases":["post-reset"],"resource_types":["Linux"],"version":"1.0.0"}"#,
        );
        assert_eq!(String::from_utf8(m.canonical_bytes()).unwrap(), expected);
        assert_eq!(m.digest(), hex::encode(Sha256::digest(expected)));
    }

    #[test]
    fn delivery_limits_are_signed_only_when_declared_and_checked() {
        let plain = with("").unwrap();
        assert_eq!(plain.delivery(), DeliveryLimits::default());
        let text = String::from_utf8(plain.canonical_bytes()).unwrap();
        assert!(!text.contains("delivery"), "{text}");
        let declared = with("[delivery]\nmax_attempts = 8\nmax_age_secs = 3600\n").unwrap();
        assert_eq!(
            declared.delivery(),
            DeliveryLimits {
                max_attempts: 8,
                max_age_secs: 3600
            }
        );
        let text = String::from_utf8(declared.canonical_bytes()).unwrap();
        assert!(
            text.contains(r#""delivery":{"max_age_secs":3600,"max_attempts":8}"#),
            "{text}"
        );
        assert_ne!(declared.digest(), plain.digest());
        // Declaring the defaults is still a declaration: its bytes say so.
        let defaults = with("[delivery]\n").unwrap();
        assert_ne!(defaults.digest(), plain.digest());
        for (bad, field) in [
            ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
            ("[delivery]\nmax_attempts = 101\n", "delivery.max_attempts"),
            ("[delivery]\nmax_age_secs = 59\n", "delivery.max_age_secs"),
            (
                "[delivery]\nmax_age_secs = 604801\n",
                "delivery.max_age_secs",
            ),
            ("[delivery]\nforever = true\n", "unknown field `forever`"),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    const SYNC: &str = r#"
name = "sync"
version = "2.0.1"
phases = ["pre-reset", "post-reset"]
modes = ["agent", "agentless"]
resource_types = ["Mac", "Linux"]
[[parameters]]
name = "a"
description = "first"
[[parameters]]
name = "b"
description = "second"
[capabilities]
props = ["LOGINNAME", "IPADDRESS"]
secrets = ["new-password", "old-password"]
network = ["https://API.Example.com:0443"]
[[capabilities.exec]]
program = "/bin/ls"
args = ["-l", "/tmp"]
"#;

    #[test]
    fn manifests_that_mean_the_same_have_the_same_bytes() {
        // Other key order, sets reordered and repeated, defaults spelled out, host lowercase.
        let same = r#"
resource_types = ["Linux", "Mac", "Linux"]
modes = ["agentless", "agent", "agent"]
version = "2.0.1"
phases = ["post-reset", "pre-reset"]
name = "sync"
parameters = [
  { name = "a", description = "first", required = false },
  { description = "second", name = "b" },
]
[limits]
output_kib = 64
timeout_ms = 5000
[capabilities]
secrets = ["old-password", "new-password", "old-password"]
exec = [{ args = ["-l", "/tmp"], program = "/bin/ls" }]
network = ["https://api.example.com:443"]
props = ["IPADDRESS", "LOGINNAME", "IPADDRESS"]
target_exec = []
"#;
        let (a, b) = (
            Manifest::parse(SYNC).unwrap(),
            Manifest::parse(same).unwrap(),
        );
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
    }

    #[test]
    fn any_change_in_meaning_changes_the_bytes() {
        let base = Manifest::parse(SYNC).unwrap().canonical_bytes();
        let changes = [
            (r#", "old-password"]"#, "]"),
            (r#""IPADDRESS"]"#, r#""LOCATION"]"#),
            (":0443", ":8443"),
            (r#""/tmp"]"#, r#""/"]"#),
            ("\"second\"", "\"second\"\nrequired = true"),
            (
                "[capabilities]",
                "[limits]\ntimeout_ms = 5001\n[capabilities]",
            ),
        ];
        for (from, to) in changes {
            assert!(SYNC.contains(from), "{from}");
            let changed = Manifest::parse(&SYNC.replace(from, to)).unwrap();
            assert_ne!(changed.canonical_bytes(), base, "{from} -> {to}");
        }
        // Parameters are an ordered list, not a set.
        let (a, b) = (
            "name = \"a\"\ndescription = \"first\"",
            "name = \"b\"\ndescription = \"second\"",
        );
        let swapped = SYNC.replace(a, "X").replace(b, a).replace("X", b);
        assert_ne!(Manifest::parse(&swapped).unwrap().canonical_bytes(), base);
    }

    #[test]
    fn star_stays_within_one_word_and_path_segment() {
        for (pattern, text) in [
            ("app-*.service", "app-web.service"),
            ("app-*.service", "app-.service"),
            ("*", ""),
            ("--user=*", "--user=alice"),
            ("/var/log/*/*.log", "/var/log/app/x.log"),
            ("a;b|$(c)", "a;b|$(c)"), // no shell: metacharacters are literal
        ] {
            assert!(glob_match(pattern, text), "{pattern} should match {text}");
        }
        for (pattern, text) in [
            ("app-*.service", "app-web.timer"),
            ("app-*.service", "app-../x.service"),
            ("/var/log/*.log", "/var/log/a/b.log"),
            ("*", "two words"),
            ("*", "tab\there"),
            ("restart", "restart-now"),
            ("restart", "Restart"),
        ] {
            assert!(
                !glob_match(pattern, text),
                "{pattern} should not match {text}"
            );
        }
    }

    #[test]
    fn exec_needs_the_program_and_every_argument_to_match() {
        let (m, ctl) = (example(), "/usr/bin/systemctl");
        assert!(m.exec_allowed(ctl, &["restart", "app-api.service"]).is_ok());
        assert!(
            m.exec_allowed(ctl, &["is-active", "app-api.service"])
                .is_ok()
        );
        assert!(
            m.target_exec_allowed("systemctl", &["reload", "sshd"])
                .is_ok()
        );
        for args in [
            &["stop", "app-api.service"][..],
            &["restart", "sshd.service"],
            &["restart", "app-a.service", "extra"],
            &["restart"],
            &["restart", "app-x sshd.service"],
        ] {
            let denial = m.exec_allowed(ctl, args).unwrap_err();
            let shown =
                format!("capabilities.exec: '{ctl}' is not granted with arguments {args:?}");
            assert_eq!(denial.to_string(), shown);
        }
        let other = m.exec_allowed("/usr/bin/systemctl2", &["restart", "app-a.service"]);
        assert!(matches!(other, Err(Denial::Program { .. })));
        let target = m.target_exec_allowed(ctl, &["reload", "sshd"]).unwrap_err();
        let expected = "capabilities.target_exec: '/usr/bin/systemctl' is not granted";
        assert_eq!(target.to_string(), expected);
    }

    #[test]
    fn network_grants_match_scheme_host_and_port() {
        let grants = r#"network = ["https://Api.Example.com:443", "tcp://[::1]:5432"]"#;
        let m = with(&format!("[capabilities]\n{grants}\n")).unwrap();
        assert!(m.allows_network(Scheme::Https, "api.example.com", 443));
        assert!(m.allows_network(Scheme::Https, "API.EXAMPLE.COM", 443));
        assert!(!m.allows_network(Scheme::Http, "api.example.com", 443));
        assert!(!m.allows_network(Scheme::Https, "api.example.com", 8443));
        assert!(!m.allows_network(Scheme::Https, "evil.api.example.com", 443));
        assert!(!m.allows_network(Scheme::Https, "api.example.com.evil", 443));
        assert!(m.allows_network(Scheme::Tcp, "::1", 5432));
        assert!(m.allows_network(Scheme::Tcp, "[::1]", 5432));
        let shown: Vec<String> = m.endpoints().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["https://api.example.com:443", "tcp://[::1]:5432"]);
        assert!(example().allows_network(Scheme::Tcp, "10.0.4.12", 5432));
    }

    #[test]
    fn interpreters_wrappers_and_secret_like_keys_are_refused() {
        for program in [
            "/usr/bin/python3",
            "/usr/bin/python3.11",
            "/usr/bin/perl",
            "/usr/bin/sudo",
            "/bin/bash5.2",
            "/usr/bin/timeout",
        ] {
            let text = format!(
                "name = \"x\"\nversion = \"1.0.0\"\nphases = [\"post-reset\"]\nmodes = [\"agentless\"]\nresource_types = [\"Linux\"]\n[[capabilities.exec]]\nprogram = \"{program}\"\nargs = [\"*\"]\n"
            );
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains("like a shell"), "{program}: {err}");
        }
        for key in ["DB_PASSWORD", "API_SECRET", "PASSPHRASE"] {
            let text = format!(
                "name = \"x\"\nversion = \"1.0.0\"\nphases = [\"post-reset\"]\nmodes = [\"agentless\"]\nresource_types = [\"Linux\"]\n[capabilities]\nprops = [\"{key}\"]\n"
            );
            assert!(
                Manifest::parse(&text)
                    .unwrap_err()
                    .to_string()
                    .contains("is a secret"),
                "{key}"
            );
        }
    }

    #[test]
    fn star_admits_neither_options_nor_control_characters() {
        assert!(glob_match("*", "alice"));
        assert!(!glob_match("*", "-a"));
        assert!(glob_match("-*", "-a"));
        assert!(!glob_match("*", "a\u{0}b"));
        assert!(!glob_match("*.service", "x\u{1b}.service"));
    }
}

#[cfg(test)]
mod wrapper_tests {
    use super::*;

    fn rule(program: &str, args: &[&str]) -> Result<Manifest, Error> {
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        let text = format!(
            "name = \"x\"\nversion = \"1.0.0\"\nphases = [\"post-reset\"]\nmodes = [\"agentless\"]\nresource_types = [\"Linux\"]\n[[capabilities.exec]]\nprogram = \"{program}\"\nargs = [{}]\n",
            args.join(", ")
        );
        Manifest::parse(&text)
    }

    #[test]
    fn no_grant_lets_a_listener_start_a_command_runner() {
        // Wrappers run the program named by an operand: `ionice -c3 *` admitted `sh`.
        for program in [
            "/usr/bin/ionice",
            "/usr/bin/taskset",
            "/usr/bin/chrt",
            "/usr/bin/setarch",
            "/usr/bin/prlimit",
            "/usr/bin/flock",
            "/usr/bin/setpriv",
            "/usr/bin/sg",
            "/usr/bin/watch",
            "/usr/bin/strace",
            "/usr/bin/ssh-agent",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/bin/sed",
        ] {
            let err = rule(program, &["-c3", "*"]).unwrap_err().to_string();
            assert!(err.contains("can run any command"), "{program}: {err}");
        }
        // Structural: a program nobody listed still cannot be handed a program name.
        let unknown = "/opt/tools/run-with-lock";
        for args in [&["*"][..], &["lock", "s*"], &["/usr/bin/*"], &["--cmd=*"]] {
            let err = rule(unknown, args).unwrap_err().to_string();
            assert!(err.contains("could name a program"), "{args:?}: {err}");
        }
        for runner in ["sh", "/bin/sh", "/usr/bin/python3"] {
            let err = rule(unknown, &["-x", runner]).unwrap_err().to_string();
            assert!(err.contains("names a command runner"), "{runner}: {err}");
        }
        // A look-alike of an allowlisted program outside the system directories is unknown.
        let err = rule("/opt/evil/wc", &["*"]).unwrap_err().to_string();
        assert!(err.contains("could name a program"), "{err}");
        // What stays possible: literal arguments, file patterns, allowlisted programs.
        assert!(rule(unknown, &["--quiet", "/var/log/app-*.log"]).is_ok());
        assert!(rule("/usr/bin/echo", &["*"]).is_ok());
        assert!(rule("/usr/bin/wc", &["-c", "*"]).is_ok());
        assert!(rule("/usr/bin/systemctl", &["restart", "app-*.service"]).is_ok());
    }
}

#[cfg(test)]
mod dot_segment_tests {
    use super::*;

    #[test]
    fn star_never_matches_a_dot_dot_or_empty_path_segment() {
        for (pattern, text) in [
            ("/srv/app/data/*", "/srv/app/data/.."),
            ("/srv/app/data/*", "/srv/app/data/."),
            ("/srv/app/data/*/x", "/srv/app/data/../x"),
            ("/srv/app/data/.*", "/srv/app/data/.."),
            ("/srv/app/data/*.", "/srv/app/data/.."),
            ("*", ".."),
            ("*", "."),
            ("../*", "../.."),
            ("/srv/app/data/*/x", "/srv/app/data//x"),
            ("/srv/app/data/*", "/srv/app/data/"),
        ] {
            assert!(
                !glob_match(pattern, text),
                "{pattern} should not match {text}"
            );
        }
        for (pattern, text) in [
            ("/srv/app/data/*", "/srv/app/data/.hidden"),
            ("/srv/app/data/*", "/srv/app/data/a..b"),
            ("/srv/app/data/*", "/srv/app/data/..."),
            ("../*", "../x"), // a literal '..' is the grant's own business
            ("/srv/app/data/*.log", "/srv/app/data/.log"),
            ("*", ""),
        ] {
            assert!(glob_match(pattern, text), "{pattern} should match {text}");
        }
    }
}
