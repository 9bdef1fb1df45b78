//! The documents say only what is true of the binaries and the API (issue 24): every `lockstep`
//! and `lockstep-agent` command line in `README.md`, `agent/README.md` and `docs/*.md` names
//! subcommands and flags that exist, and every `METHOD /v1/...` they name is an operation of
//! the served OpenAPI document.

use lockstep_testkit as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Api, Server};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The documents a user follows, as (name, text).
fn documents() -> Vec<(String, String)> {
    let mut paths = vec![repo().join("README.md"), repo().join("agent/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(repo()).unwrap_or(&p).display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Command lines in fenced blocks (continuations joined) and in inline code spans.
fn command_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            let l = line.trim_end();
            match l.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(l);
                    out.push(std::mem::take(&mut pending));
                }
            }
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

/// Each `BINARY word word --flag ...` in `line`, as the words after the binary, up to the end
/// of that command (a comment, a pipe, `;`, `&&`, a redirection).
fn invocations(line: &str, binary: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let named = *w == binary || w.ends_with(&format!("/{binary}"));
        // The command itself, not an argument of another one (`install lockstep-agent ...`).
        let starts = match i.checked_sub(1).map(|j| words[j]) {
            None => true,
            Some(before) => {
                matches!(
                    before,
                    "sudo" | "$" | "&&" | ";" | "|" | "exec" | "env" | "("
                ) || before.contains('=') && before.starts_with(|c: char| c.is_ascii_uppercase())
            }
        };
        if !named || !starts {
            continue;
        }
        let args: Vec<String> = words[i + 1..]
            .iter()
            .take_while(|a| !matches!(**a, "#" | "|" | ";" | "&&" | "||" | ">" | "2>&1" | "&"))
            .map(|a| a.trim_end_matches([')', ',', '.', ':']).to_string())
            .collect();
        out.push(args);
    }
    out
}

fn help(bin: &Path, chain: &[String]) -> String {
    let out = Command::new(bin)
        .args(chain)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(
        out.status.success(),
        "{} {} --help failed: {}",
        bin.display(),
        chain.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands a help text lists under "Commands:".
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// What is wrong with one invocation: an unknown subcommand or flag.
fn check(bin: &Path, args: &[String]) -> Option<String> {
    let mut chain: Vec<String> = Vec::new();
    let mut text = help(bin, &chain);
    for a in args {
        let known = subcommands(&text);
        if known.is_empty() || a.starts_with('-') {
            break;
        }
        if !known.contains(a) {
            // Where only a subcommand may come, another word is a misspelt command; elsewhere
            // it is a positional argument (a file, a name).
            let usage = text.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
            if usage.trim_end().ends_with("<COMMAND>") {
                return Some(format!(
                    "'{a}' is not a subcommand of '{}'",
                    chain.join(" ")
                ));
            }
            break;
        }
        chain.push(a.clone());
        text = help(bin, &chain);
    }
    for a in args {
        let Some(flag) = a.strip_prefix("--") else {
            continue;
        };
        let flag = flag.split('=').next().unwrap_or(flag);
        if flag.is_empty() || flag == "help" {
            continue;
        }
        let listed = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|w| w == format!("--{flag}") || w.starts_with(&format!("--{flag}=")));
        if !listed {
            return Some(format!("'{}' has no flag --{flag}", chain.join(" ")));
        }
    }
    None
}

#[test]
fn every_command_line_in_the_docs_names_subcommands_and_flags_that_exist() {
    let bin = common::lockstep_bin();
    let agent = bin.with_file_name("lockstep-agent");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (doc, text) in documents() {
        for line in command_lines(&text) {
            for (binary, path) in [("lockstep", &bin), ("lockstep-agent", &agent)] {
                for args in invocations(&line, binary) {
                    checked += 1;
                    if let Some(why) = check(path, &args) {
                        wrong.push(format!("{doc}: `{}`: {why}", line.trim()));
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} command lines found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `METHOD /v1/...` in the documents, as (document, method, path without its query).
fn operations(doc: &str, text: &str) -> Vec<(String, String, String)> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '`' || c == '|' || c == '(' || c == '"')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    for pair in words.windows(2) {
        let method = pair[0];
        if !matches!(method, "GET" | "POST" | "PUT" | "DELETE" | "PATCH") {
            continue;
        }
        let Some(path) = pair[1].strip_prefix("/v1/") else {
            continue;
        };
        let path = path.split(['?', '[']).next().unwrap_or(path);
        let path = path.trim_end_matches([')', ',', '.', ':', ';']);
        out.push((doc.to_string(), method.to_string(), format!("/v1/{path}")));
    }
    out
}

/// Whether a documented path matches a template of the OpenAPI document: a `{param}` segment
/// matches any segment (a documented `{id}`, `chg_…`, `$ID` or a real id).
fn matches(template: &str, documented: &str) -> bool {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let d: Vec<&str> = documented.trim_end_matches('/').split('/').collect();
    t.len() == d.len()
        && t.iter()
            .zip(&d)
            .all(|(t, d)| t == d || (t.starts_with('{') && !d.is_empty()))
}

/// Routes removed on purpose, which `docs/security.md` names as the attack they enabled: they
/// must stay unserved.
const REMOVED: &[(&str, &str)] = &[("POST", "/v1/users/{id}/tokens")];

#[tokio::test]
async fn every_api_operation_in_the_docs_is_served() {
    let server = Server::start();
    let api = Api::new(&server);
    let spec = api.get("/openapi.json", &server.root_token).await.json();
    let mut served = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            served.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (doc, text) in documents() {
        for (doc, method, path) in operations(&doc, &text) {
            checked += 1;
            let known = served
                .iter()
                .any(|(m, p)| *m == method && (p == &path || matches(p, &path)));
            let removed = REMOVED
                .iter()
                .any(|(m, p)| *m == method && matches(p, &path));
            if removed {
                assert!(
                    !known,
                    "{doc}: {method} {path} was removed and is served again"
                );
            } else if !known {
                wrong.push(format!("{doc}: {method} {path}"));
            }
        }
    }
    assert!(checked > 50, "only {checked} operations found");
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "not in /openapi.json:\n{}",
        wrong.join("\n")
    );
}

/// The checks themselves catch what they are for.
#[test]
fn the_checks_catch_a_misspelt_subcommand_an_unknown_flag_and_a_wrong_path() {
    let bin = common::lockstep_bin();
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert!(
        check(
            &bin,
            &args("listener sign x.wasm --manifest m.toml --key k")
        )
        .is_none()
    );
    let wrong = check(&bin, &args("lisener sign x.wasm")).unwrap();
    assert!(wrong.contains("'lisener' is not a subcommand"), "{wrong}");
    let wrong = check(&bin, &args("listener sign x.wasm --manifests m.toml")).unwrap();
    assert!(wrong.contains("no flag --manifests"), "{wrong}");
    let line = "LOCKSTEP_TOKEN=$T lockstep reset --resource-type Linux # all of them";
    assert_eq!(
        invocations(line, "lockstep"),
        [args("reset --resource-type Linux")]
    );
    assert!(
        invocations(
            "install -m 0755 lockstep-agent /usr/local/bin/",
            "lockstep-agent"
        )
        .is_empty()
    );
    assert!(matches(
        "/v1/change-requests/{id}/approve",
        "/v1/change-requests/chg_…/approve"
    ));
    assert!(!matches(
        "/v1/change-requests/{id}/approve",
        "/v1/change-requests/chg_…"
    ));
    let found = operations("d", "`POST /v1/resources?x=1` and (GET /v1/audit).");
    assert_eq!(found[0].2, "/v1/resources");
    assert_eq!(found[1].2, "/v1/audit");
}

/// Every subcommand path of `bin`, from its own help.
fn all_commands(bin: &Path) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < out.len() {
        let chain = out[i].clone();
        for sub in subcommands(&help(bin, &chain)) {
            if sub != "help" {
                let mut next = chain.clone();
                next.push(sub);
                out.push(next);
            }
        }
        i += 1;
    }
    out
}

/// The options a help text lists without saying what they are for.
fn undocumented_options(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .collect();
    let is_option = |l: &str| l.trim_start().starts_with('-');
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !is_option(line) {
            continue;
        }
        let spec_and_help = line.trim_start();
        // Short form: `--flag <VALUE>  Help text`; long form: help on the next, deeper line.
        let inline = spec_and_help
            .split("  ")
            .skip(1)
            .any(|h| !h.trim().is_empty());
        let below = lines
            .get(i + 1)
            .is_some_and(|n| !n.trim().is_empty() && !is_option(n));
        if !inline && !below {
            out.push(spec_and_help.trim().to_string());
        }
    }
    out
}

#[test]
fn every_option_of_every_command_says_what_it_is_for() {
    let bin = common::lockstep_bin();
    let agent = bin.with_file_name("lockstep-agent");
    let mut missing = Vec::new();
    for b in [&bin, &agent] {
        for chain in all_commands(b) {
            for option in undocumented_options(&help(b, &chain)) {
                missing.push(format!("{} {}: {option}", b.display(), chain.join(" ")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options without help:\n{}",
        missing.join("\n")
    );
    let broken = "Options:\n      --manifest <MANIFEST>  \n      --key <KEY>  The key\n";
    assert_eq!(undocumented_options(broken), ["--manifest <MANIFEST>"]);
}
