//! Command templates: how a resource type's passwords are changed over SSH.
//!
//! A template names an absolute program, its arguments and what goes to its standard input.
//! `{login}` may appear in the arguments and the input; `{password}` only in the input, never
//! on a command line (argv is readable by every user of the target). Linux's default is
//! `chpasswd` with `{login}:{password}` lines; another system gets its own template, e.g.
//! FreeBSD's `pw usermod {login} -h 0` with `{password}` on standard input.
//!
//! A template whose arguments do not name the login takes many accounts in one run (its input
//! is repeated per account, as `chpasswd` reads lines); one that does runs once per account.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::FieldProblem;
use crate::vault::Secret;

/// The placeholders a template may use.
const LOGIN: &str = "{login}";
const PASSWORD: &str = "{password}";
/// Most arguments, and bytes per argument or input template.
const MAX_ARGS: usize = 32;
const MAX_TEXT: usize = 1024;

/// How one resource type's passwords are set on its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetCommand {
    /// Absolute path of the program on the target, e.g. `/usr/sbin/chpasswd`.
    pub program: String,
    /// Its arguments; `{login}` is replaced by the account's login name (quoted for the
    /// target's shell). `{password}` is refused here.
    #[serde(default)]
    pub args: Vec<String>,
    /// What the program reads on standard input for one account: must contain `{password}`,
    /// may contain `{login}`; `\n` ends a line.
    pub stdin: String,
}

impl ResetCommand {
    /// The default for Linux (and any SSH type without its own template): `chpasswd`, one
    /// `login:password` line per account, many accounts per run.
    pub fn chpasswd() -> ResetCommand {
        ResetCommand {
            program: "/usr/sbin/chpasswd".into(),
            args: Vec::new(),
            stdin: "{login}:{password}\n".into(),
        }
    }

    /// True when one run may carry many accounts (the arguments do not name the login).
    pub fn batchable(&self) -> bool {
        !self.args.iter().any(|a| a.contains(LOGIN))
    }

    /// True for chpasswd, whose error output names the lines it did not apply.
    pub fn is_chpasswd(&self) -> bool {
        self.name() == "chpasswd"
    }

    /// The program's name, for messages.
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }

    /// Every problem with the template, as API field problems under `field`.
    pub fn problems(&self, field: &str) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut bad = |sub: &str, why: &str| {
            out.push(FieldProblem::new(format!("{field}.{sub}"), why));
        };
        let p = &self.program;
        if !p.starts_with('/') || p.len() > MAX_TEXT || p.contains(char::is_whitespace) {
            bad(
                "program",
                "must be an absolute path without spaces, e.g. /usr/sbin/chpasswd",
            );
        }
        if p.chars().any(char::is_control) || p.contains(['{', '}']) {
            bad(
                "program",
                "must not contain control characters or placeholders",
            );
        }
        if self.args.len() > MAX_ARGS {
            bad("args", &format!("at most {MAX_ARGS} arguments"));
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.contains(PASSWORD) {
                bad(
                    &format!("args[{i}]"),
                    "{password} may not be on the command line (every user of the target can read it there); put it in stdin",
                );
            }
            if a.len() > MAX_TEXT || a.chars().any(char::is_control) {
                bad(
                    &format!("args[{i}]"),
                    &format!("at most {MAX_TEXT} bytes, no control characters"),
                );
            }
            if has_unknown_placeholder(a) {
                bad(
                    &format!("args[{i}]"),
                    "the only placeholder allowed here is {login}",
                );
            }
        }
        let s = &self.stdin;
        if s.matches(PASSWORD).count() == 0 {
            bad("stdin", "must contain {password}");
        }
        if s.len() > MAX_TEXT || s.chars().any(|c| c.is_control() && c != '\n') {
            bad(
                "stdin",
                &format!("at most {MAX_TEXT} bytes, no control characters but line breaks"),
            );
        }
        if has_unknown_placeholder(s) {
            bad(
                "stdin",
                "the only placeholders allowed are {login} and {password}",
            );
        }
        if self.batchable() && !s.ends_with('\n') {
            bad(
                "stdin",
                "must end with a line break: without {login} in args, one run takes many accounts, one after another",
            );
        }
        out
    }

    /// The command line for the target's shell: program and arguments, each quoted, with
    /// `login` in place of `{login}`.
    pub fn command_line(&self, login: &str) -> String {
        let mut line = shell_quote(&self.program);
        for a in &self.args {
            line.push(' ');
            line.push_str(&shell_quote(&a.replace(LOGIN, login)));
        }
        line
    }

    /// One account's standard input: the template with the login and the password in place.
    pub fn input(&self, login: &str, password: &Secret) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.stdin.len() + 64));
        for (i, part) in self.stdin.split(PASSWORD).enumerate() {
            if i > 0 {
                out.extend_from_slice(password.expose().as_bytes());
            }
            out.extend_from_slice(part.replace(LOGIN, login).as_bytes());
        }
        out
    }
}

/// A `{name}` (lowercase letters, `_`, `-`) other than the two placeholders: most likely a
/// misspelt one, which would otherwise reach the target as it is. Other braces (`${1}`,
/// `awk '{print $1}'`) are the program's own.
fn has_unknown_placeholder(text: &str) -> bool {
    text.split('{').skip(1).any(|after| {
        after.split_once('}').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
                && name != "login"
                && name != "password"
        })
    })
}

/// `text` as one word for a POSIX shell: single-quoted, with `'` written as `'\''`.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,@+%".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(program: &str, args: &[&str], stdin: &str) -> ResetCommand {
        ResetCommand {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.into(),
        }
    }

    fn fields(c: &ResetCommand) -> Vec<String> {
        c.problems("reset_command")
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn the_default_is_chpasswd_and_is_valid() {
        let c = ResetCommand::chpasswd();
        assert!(fields(&c).is_empty());
        assert!(c.batchable() && c.is_chpasswd());
        assert_eq!(c.command_line("app"), "/usr/sbin/chpasswd");
        let pw = Secret::new("s3cret".into());
        assert_eq!(&c.input("app", &pw)[..], b"app:s3cret\n");
    }

    #[test]
    fn a_password_on_the_command_line_is_refused() {
        let c = cmd(
            "/usr/sbin/pw",
            &["usermod", "{login}", "-w", "{password}"],
            "{password}\n",
        );
        assert_eq!(fields(&c), ["reset_command.args[3]"]);
        let c = cmd("/usr/sbin/pw", &["usermod", "{login}"], "no secret here\n");
        assert_eq!(fields(&c), ["reset_command.stdin"]);
    }

    #[test]
    fn bad_programs_placeholders_and_lines_are_refused() {
        assert_eq!(
            fields(&cmd("chpasswd", &[], "{login}:{password}\n")),
            ["reset_command.program"]
        );
        assert_eq!(
            fields(&cmd("/bin/x", &["{user}"], "{password}\n")),
            ["reset_command.args[0]"]
        );
        assert_eq!(
            fields(&cmd("/bin/x", &[], "{login}:{pasword}{password}\n")),
            ["reset_command.stdin"]
        );
        // A program's own braces are not placeholders.
        let shell = cmd(
            "/bin/sh",
            &[
                "-c",
                "read -r p; echo \"${1}:$p\" | awk '{print $0}'",
                "sh",
                "{login}",
            ],
            "{password}\n",
        );
        assert!(fields(&shell).is_empty(), "{:?}", fields(&shell));
        assert_eq!(
            fields(&cmd("/bin/x", &[], "{login}:{password}")),
            ["reset_command.stdin"],
            "a many-account input must end its line"
        );
        assert_eq!(
            fields(&cmd("/bin/x", &["a\rb"], "{password}\n")),
            ["reset_command.args[0]"]
        );
    }

    #[test]
    fn per_account_templates_quote_the_login_for_the_shell() {
        let c = cmd(
            "/usr/sbin/pw",
            &["usermod", "{login}", "-h", "0"],
            "{password}\n",
        );
        assert!(fields(&c).is_empty());
        assert!(!c.batchable() && !c.is_chpasswd());
        assert_eq!(c.command_line("app"), "/usr/sbin/pw usermod app -h 0");
        assert_eq!(
            c.command_line("a'b; rm -rf /"),
            r"/usr/sbin/pw usermod 'a'\''b; rm -rf /' -h 0"
        );
        let pw = Secret::new("p{login}w".into());
        assert_eq!(
            &c.input("app", &pw)[..],
            b"p{login}w\n",
            "a password is inserted as it is, never expanded"
        );
    }
}
