//! Reset command templates (`inventory::reset_command::ResetCommand`): the JSON of `reset_command` in
//! `PUT /v1/resource-types/{name}/reset-command` and in the stored column, validated by
//! `problems` (what `check_reset_command` runs once the type is known to use SSH) and rendered
//! by `command_line` and `remote::command_input`.
//!
//! Input: the template's JSON, then optionally `\0` login `\0` password.
//!
//! Checks, beyond not panicking:
//! - a template that parses writes back (as stored) to the same template;
//! - a valid template never puts the password on the command line: no argument holds
//!   `{password}`, and the line a shell reads splits into exactly the program and the
//!   arguments with the login in place, whatever the login (no injection through it);
//! - one account's input is the stdin template with `{login}` and `{password}` replaced, and
//!   has exactly as many lines as the template (a login or password cannot add a line);
//! - for chpasswd, an accepted login and password make one `login:password` line that splits
//!   back into them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_server::inventory::reset_command::ResetCommand;
use lockstep_server::inventory::resource_types::stored_command;
use lockstep_server::reset::remote::command_input;
use lockstep_server::vault::Secret;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let json = parts.next().unwrap_or_default();
    let login = String::from_utf8_lossy(parts.next().unwrap_or(b"alice")).into_owned();
    let password = String::from_utf8_lossy(parts.next().unwrap_or(b"S3cret-pw!")).into_owned();
    let password = Secret::new(password);

    check_chpasswd(&login, &password);

    let Ok(command) = serde_json::from_slice::<ResetCommand>(json) else {
        return;
    };
    let stored = stored_command(Some(&command))
        .expect("a template serializes")
        .expect("Some in, Some out");
    let again: ResetCommand = serde_json::from_str(&stored).expect("a stored template parses");
    assert_eq!(
        again, command,
        "a template does not round-trip through its stored form"
    );

    let problems = command.problems("reset_command");
    for p in &problems {
        assert!(p.field.starts_with("reset_command."), "{p:?}");
    }
    if !problems.is_empty() {
        return;
    }
    assert!(!command.args.iter().any(|a| a.contains("{password}")));
    assert!(command.stdin.contains("{password}"));

    let line = command.command_line(&login);
    let words = shell_words(&line).unwrap_or_else(|| panic!("not one simple command: {line:?}"));
    let mut expected = vec![command.program.clone()];
    expected.extend(command.args.iter().map(|a| a.replace("{login}", &login)));
    assert_eq!(
        words, expected,
        "the shell would not run the template as written"
    );

    let Ok(input) = command_input(&command, &login, &password) else {
        return;
    };
    let bytes = input.bytes();
    assert_eq!(
        bytes,
        render(&command.stdin, &login, password.expose()).as_bytes()
    );
    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    assert_eq!(
        lines(bytes),
        lines(command.stdin.as_bytes()),
        "a login or password added a line to the input"
    );
});

/// The default template (chpasswd): one `login:password` line, split back at the first `:`.
fn check_chpasswd(login: &str, password: &Secret) {
    let chpasswd = ResetCommand::chpasswd();
    assert!(chpasswd.problems("reset_command").is_empty());
    let Ok(input) = command_input(&chpasswd, login, password) else {
        return;
    };
    let text = std::str::from_utf8(input.bytes()).expect("login and password are text");
    let line = text.strip_suffix('\n').expect("one line");
    assert!(
        !line.contains('\n'),
        "more than one chpasswd line: {line:?}"
    );
    let (l, p) = line.split_once(':').expect("login:password");
    assert_eq!((l, p), (login, password.expose()));
}

/// The template's stdin with the placeholders replaced, read left to right.
fn render(template: &str, login: &str, password: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{password}") {
            out.push_str(password);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{login}") {
            out.push_str(login);
            rest = after;
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The words a POSIX shell reads from `line`, when `line` is one simple command of plain and
/// single-quoted words separated by spaces; `None` when it holds anything else a shell would
/// act on (a second command, a redirection, an expansion, ...).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        q => w.push(q),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c if c.is_ascii_alphanumeric() || "/._-=:,@+%".contains(c) => {
                word.get_or_insert_with(String::new).push(c)
            }
            _ => return None,
        }
    }
    words.extend(word);
    Some(words)
}
