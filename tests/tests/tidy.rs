//! House rules that check themselves (issue 24), in the manner of rust-analyzer's `tidy.rs`:
//! the layering `docs/ARCHITECTURE.md` states, module docs, no module included by path, and
//! SQLite and PostgreSQL schemas that stay in step. Each rule is also run on a deliberately broken input, so a rule that
//! stopped seeing anything would fail too.

use lockstep_testkit as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The product crates (not the tests, not the test kit, not the listeners).
const CRATES: [&str; 6] = [
    "server",
    "runtime",
    "agent",
    "protocol",
    "sdk",
    "canonical-json",
];

/// The Rust sources of the product crates, as (path from the repository root, text).
fn sources() -> Vec<(String, String)> {
    sources_of(&CRATES)
}

/// The Rust sources of `crates` (their `src/`), as (path from the repository root, text).
fn sources_of(crates: &[&str]) -> Vec<(String, String)> {
    let mut paths: Vec<String> = repository_paths()
        .into_iter()
        .filter(|p| {
            p.ends_with(".rs") && crates.iter().any(|k| p.starts_with(&format!("/{k}/src/")))
        })
        .collect();
    paths.sort();
    contents(paths)
}

/// Each of `paths` (from [`repository_paths`]) as (path from the repository root, text).
fn contents(paths: Vec<String>) -> Vec<(String, String)> {
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(repo().join(&p[1..])).unwrap();
            (p[1..].to_string(), text)
        })
        .collect()
}

/// The code of a file without comments and string literals' contents, line by line (enough
/// to tell a use of a crate from a mention of it in a doc or a message).
fn code_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let l = l.split("//").next().unwrap_or("");
            // Drop string contents: keep what is outside pairs of quotes.
            l.split('"').step_by(2).collect::<Vec<_>>().join("\"\"")
        })
        .collect()
}

/// Files that name `word` as a path segment (`word::`) in code, outside the allowed prefixes.
fn naming_outside(files: &[(String, String)], word: &str, allowed: &[&str]) -> BTreeSet<String> {
    let needle = format!("{word}::");
    offenders(
        files,
        |path| !allowed.iter().any(|a| path.starts_with(a)),
        |l| {
            l.match_indices(&needle).any(|(i, _)| {
                // A whole segment: not `my_sqlx::`.
                l[..i]
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        },
    )
    .into_iter()
    .collect()
}

/// The files under the rule (`in_scope`, by path) with a line of code that breaks it.
fn offenders(
    files: &[(String, String)],
    in_scope: impl Fn(&str) -> bool,
    breaks: impl Fn(&str) -> bool,
) -> Vec<String> {
    files
        .iter()
        .filter(|(path, text)| in_scope(path) && code_lines(text).iter().any(|l| breaks(l)))
        .map(|(path, _)| path.clone())
        .collect()
}

#[test]
fn sql_stays_in_the_store() {
    let found = naming_outside(&sources(), "sqlx", &["server/src/store/"]);
    assert!(
        found.is_empty(),
        "sqlx named outside server/src/store/ in {found:?}: domain code knows no SQL; \
         hint: add a store function that returns what the domain needs, and match \
         `store::Error` (Unique, ForeignKey, Busy) rather than sqlx's errors"
    );
}

#[test]
fn http_stays_in_the_api() {
    let files = sources();
    // The other crates are HTTP's own business (the agent's client, wasi:http in the runtime
    // and the SDK).
    let allowed = [
        "server/src/api/",
        "server/src/serve.rs",
        "agent/src/",
        "runtime/src/",
        "protocol/src/",
        "sdk/src/",
    ];
    for word in ["axum", "http"] {
        let found = naming_outside(&files, word, &allowed);
        assert!(
            found.is_empty(),
            "{word} named outside the API in {found:?}: only api/ (and serve.rs) knows HTTP; \
             hint: return a domain error and let api/problem.rs pick the status"
        );
    }
}

/// Files outside `api/` that build an `Error::Rejected` (a status picked by hand).
fn statuses_outside_the_api(files: &[(String, String)]) -> Vec<String> {
    offenders(
        files,
        |path| !path.starts_with("server/src/api/"),
        |l| l.contains("Error::Rejected {") && !l.contains(".."),
    )
}

#[test]
fn only_the_api_picks_a_status() {
    let found = statuses_outside_the_api(&sources());
    assert!(
        found.is_empty(),
        "Error::Rejected built outside api/ in {found:?}: domain code says what happened \
         (Conflict, TooLarge, Validation, ...) and api/problem.rs picks the status"
    );
    let broken = [(
        "server/src/inventory/x.rs".to_string(),
        "//! x\nfn f() -> Error { Error::Rejected {\n status: 409, detail: d } }\n".to_string(),
    )];
    assert_eq!(
        statuses_outside_the_api(&broken),
        ["server/src/inventory/x.rs"]
    );
}

/// Runtime files other than `limits.rs` that define a `MAX_` constant.
fn limits_outside_limits_rs(files: &[(String, String)]) -> Vec<String> {
    offenders(
        files,
        |path| path.starts_with("runtime/src/") && path != "runtime/src/limits.rs",
        |l| {
            let l = l
                .trim_start()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            l.starts_with("const MAX_")
        },
    )
}

#[test]
fn every_run_limit_is_in_limits_rs() {
    let found = limits_outside_limits_rs(&sources());
    assert!(
        found.is_empty(),
        "limits defined outside runtime/src/limits.rs in {found:?}; hint: every per-run \
         limit lives in limits.rs, where the bounds they add up to are stated"
    );
    let broken = [(
        "runtime/src/host/x.rs".to_string(),
        "//! x\npub const MAX_THINGS: usize = 3;\n".to_string(),
    )];
    assert_eq!(limits_outside_limits_rs(&broken), ["runtime/src/host/x.rs"]);
}

/// The `[dependencies]` of a crate's `Cargo.toml` that none of its Rust files name (as
/// `name::` or `use name` with `-` read as `_`), in the manner of cargo-machete.
fn unused_dependencies(manifest: &str, code: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let normal = section == "[dependencies]" || section.ends_with(".dependencies]");
        let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| !n.is_empty()) else {
            continue;
        };
        if !normal || line.starts_with('#') || section.contains("dev-") {
            continue;
        }
        let ident = name.replace('-', "_");
        let used = code.contains(&format!("{ident}::"))
            || code.contains(&format!("use {ident}"))
            || code.contains(&format!("extern crate {ident}"));
        if !used {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn every_dependency_is_used() {
    let mut unused = Vec::new();
    // The test kit is no product crate (the layering rules do not apply to it), but a library
    // all the same: what it depends on, it uses.
    for krate in CRATES.into_iter().chain(["testkit"]) {
        let dir = repo().join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let code: String = sources_of(&[krate])
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        for name in unused_dependencies(&manifest, &code) {
            unused.push(format!("{krate}: {name}"));
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies no source names: {unused:?}; remove them"
    );
    let manifest = "[dependencies]\nserde_json.workspace = true\nlibc = \"0.2\"\n\
                    [dev-dependencies]\ntempfile = \"3\"\n";
    assert_eq!(
        unused_dependencies(manifest, "let v = serde_json::json!(1);"),
        ["libc"]
    );
}

#[test]
fn master_key_bytes_are_read_only_in_the_vault() {
    let found = offenders(
        &sources(),
        |path| path.starts_with("server/src/") && !path.starts_with("server/src/vault/"),
        |l| l.contains("MasterKey::from_hex"),
    );
    assert!(
        found.is_empty(),
        "a master key parsed outside server/src/vault/ in {found:?}; hint: MasterKeySource::load"
    );
}

#[test]
fn the_server_reads_the_clock_only_through_time_rs() {
    // Nodes agree on leases only in the database's time (`time::now_utc`, moved by the offset
    // `cluster::clock` measures); a raw read of this machine's clock would not be.
    let found = offenders(
        &sources(),
        |path| path.starts_with("server/src/") && path != "server/src/time.rs",
        |l| l.contains("Utc::now()") || l.contains("SystemTime::now()"),
    );
    assert!(
        found.is_empty(),
        "the machine's clock read directly in {found:?}; hint: crate::time::now_utc() or \
         crate::time::now()"
    );
}

#[test]
fn every_module_says_what_it_is() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc: {missing:?}; hint: one line on what the module is"
    );
}

/// Every file and folder `text` names in backticks (`something.rs`, `folder/`) that no path in
/// `paths` ends with.
fn missing_from_the_map(text: &str, paths: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            !t.is_empty()
                && (t.ends_with(".rs") || t.ends_with('/'))
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))
                && !t.starts_with('/')
        })
        .filter(|t| {
            let name = t.trim_end_matches('/');
            !paths
                .iter()
                .any(|p| p.ends_with(&format!("/{name}")) || p == name)
        })
        .map(str::to_string)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Every file and folder under the repository (not build output), from its root.
fn repository_paths() -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            out.push(format!("/{}", p.strip_prefix(root).unwrap().display()));
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &repo(), &mut out);
    out
}

/// Files with a `#[path = ...]` attribute (also inside `cfg_attr`): a module included from a
/// file of another crate or test target instead of used as a crate.
fn path_includes(files: &[(String, String)]) -> Vec<String> {
    offenders(
        files,
        |_| true,
        |l| {
            let l: String = l.split_whitespace().collect();
            l.starts_with("#[path") || (l.starts_with("#[cfg_attr(") && l.contains(",path="))
        },
    )
}

#[test]
fn no_module_is_included_by_path() {
    let files = contents(
        repository_paths()
            .into_iter()
            .filter(|p| p.ends_with(".rs"))
            .collect(),
    );
    assert!(files.len() > 100, "{} Rust files", files.len());
    let found = path_includes(&files);
    assert!(
        found.is_empty(),
        "`#[path]` includes in {found:?}: code shared between crates or test targets is a crate, \
         not a file compiled again in each; hint: test helpers live in the test kit \
         (`testkit/`, package `lockstep-testkit`), a normal dev-dependency"
    );
}

#[test]
fn the_architecture_map_names_only_what_exists() {
    let map = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let missing = missing_from_the_map(&map, &repository_paths());
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names files or folders that do not exist: {missing:?}; hint: \
         keep the map true when a module moves"
    );
}

/// Lines that cite a document outside the repository (the reference products' documents and
/// the machine notes live beside it, not in it): a reader of the code cannot follow them.
fn outside_citations(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.contains("../shared/")
                || l.match_indices("seed ").any(|(i, m)| {
                    let rest = &l[i + m.len()..];
                    rest.len() >= 3 && rest[..3].chars().all(|c| c.is_ascii_digit())
                })
        })
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn comments_and_docs_cite_only_what_is_in_the_repository() {
    let mut found = Vec::new();
    for path in repository_paths() {
        let is_text = [".rs", ".md", ".toml", ".sh"]
            .iter()
            .any(|e| path.ends_with(e));
        // This file spells the patterns out to test them.
        if !is_text || path.starts_with("/fuzz/corpus") || path == "/tests/tests/tidy.rs" {
            continue;
        }
        let text = std::fs::read_to_string(repo().join(&path[1..])).unwrap_or_default();
        for line in outside_citations(&text) {
            found.push(format!("{path}: {line}"));
        }
    }
    assert!(
        found.is_empty(),
        "citations of documents outside the repository: {found:#?}; hint: say what the \
         reference says, or cite a document under docs/"
    );
}

/// The string literals on a line of code (escapes are not decoded; names never have any).
fn literals(line: &str) -> Vec<&str> {
    let code = match line.find("//") {
        // A `//` inside a literal (a URL) is not a comment: cut only outside literals.
        Some(i) if line[..i].matches('"').count().is_multiple_of(2) => &line[..i],
        _ => line,
    };
    code.split('"').skip(1).step_by(2).collect()
}

/// Where a stored state's name is spelled as a literal outside `server/src/states.rs`, the
/// store's SQL and tests (a file's `#[cfg(test)]` module and everything after it).
fn state_names_outside_their_enum(files: &[(String, String)], names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        if !path.starts_with("server/src/")
            || path == "server/src/states.rs"
            || path.starts_with("server/src/store/")
        {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for lit in literals(line) {
                if names.contains(&lit) {
                    found.push(format!("{path}:{}: \"{lit}\"", n + 1));
                }
            }
        }
    }
    found
}

/// Literals that spell a state's name but name something else: (file, literal, what it is).
const NOT_STATES: &[(&str, &str, &str)] = &[
    (
        "server/src/cli/reset.rs",
        "succeeded",
        "a field of a job's progress",
    ),
    (
        "server/src/cli/reset.rs",
        "vetoed",
        "a field of a job's progress",
    ),
    (
        "server/src/cli/reset.rs",
        "failed",
        "a field of a job's progress",
    ),
    (
        "server/src/reset/watch.rs",
        "finished",
        "the name of a server-sent event",
    ),
    (
        "server/src/reset/pipeline/",
        "refused",
        "a listener's outcome in an item's record",
    ),
];

#[test]
fn state_names_are_spelled_only_in_their_enum() {
    let names = lockstep_server::states::all_names();
    let found: Vec<String> = state_names_outside_their_enum(&sources(), &names)
        .into_iter()
        .filter(|f| {
            !NOT_STATES
                .iter()
                .any(|(path, lit, _)| f.starts_with(path) && f.ends_with(&format!("\"{lit}\"")))
        })
        .collect();
    assert!(
        found.is_empty(),
        "state names spelled as strings: {found:#?}; hint: use the enum in \
         server/src/states.rs (`ItemState::Done.as_str()`, `KeyStatus::Trusted.is(&row.status)`)"
    );
}

#[test]
fn the_rules_catch_what_they_are_for() {
    let files = vec![
        (
            "server/src/inventory/x.rs".to_string(),
            "//! x\nfn f(e: sqlx::Error) {}\n".to_string(),
        ),
        (
            "server/src/inventory/y.rs".to_string(),
            "//! y\n// sqlx::Error in a comment\nconst S: &str = \"sqlx::x\";\nfn my_sqlx() {}\n"
                .to_string(),
        ),
        (
            "server/src/store/z.rs".to_string(),
            "//! z\nuse sqlx::Any;\n".to_string(),
        ),
    ];
    let found = naming_outside(&files, "sqlx", &["server/src/store/"]);
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["server/src/inventory/x.rs"]
    );
    let paths = vec![
        "/server/src/cli/args.rs".to_string(),
        "/server/src/cli".to_string(),
    ];
    let map = "| `cli/` | `args.rs`, `cli/args.rs`, `gone.rs`, `old/`, `/v1/users/`, `a b.rs` |";
    assert_eq!(missing_from_the_map(map, &paths), ["gone.rs", "old/"]);
    let cited = "a (seed 002, 4.8)\nb seeds 12\nc see ../shared/notes/x.md\nd seed 1\n";
    assert_eq!(
        outside_citations(cited),
        ["a (seed 002, 4.8)", "c see ../shared/notes/x.md"]
    );
    let files = vec![
        (
            "server/src/reset/x.rs".to_string(),
            "//! x\nlet a = \"done\"; // \"done\"\nlet u = \"http://x\"; // done\n\
             #[cfg(test)]\nlet b = \"done\";\n"
                .to_string(),
        ),
        (
            "server/src/store/y.rs".to_string(),
            "//! y\nlet a = \"done\";\n".to_string(),
        ),
    ];
    assert_eq!(
        state_names_outside_their_enum(&files, &["done"]),
        ["server/src/reset/x.rs:2: \"done\""]
    );
    let included = vec![
        (
            "tests/tests/x.rs".to_string(),
            "//! x\n#[path = \"../../runtime/tests/support/mod.rs\"]\nmod support;\n".to_string(),
        ),
        (
            "tests/tests/y.rs".to_string(),
            "//! y\n// #[path = \"a.rs\"] in a comment\nconst S: &str = \"#[path]\";\nmod common;\n"
                .to_string(),
        ),
        (
            "server/tests/z.rs".to_string(),
            "//! z\n  #[cfg_attr(unix, path = \"unix.rs\")]\nmod os;\n".to_string(),
        ),
    ];
    assert_eq!(
        path_includes(&included),
        ["tests/tests/x.rs", "server/tests/z.rs"]
    );
}

/// Every (table, column) of a fresh database migrated by the server.
async fn schema(url: &str) -> BTreeSet<(String, String)> {
    use sqlx::Row;
    let store = lockstep_server::store::Store::open(url)
        .await
        .expect("migrate");
    let pool = store.pool();
    let rows = if url.starts_with("sqlite:") {
        sqlx::query(
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    } else {
        sqlx::query(
            "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
             WHERE table_schema = 'public'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    rows.iter()
        .map(|r| (r.get::<String, _>("t"), r.get::<String, _>("c")))
        .filter(|(t, _)| t != "_sqlx_migrations")
        .collect()
}

#[tokio::test]
async fn sqlite_and_postgresql_migrations_make_the_same_tables_and_columns() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = schema(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tidy.db").display()
    ))
    .await;
    let Some(db) = common::postgres_database().await else {
        return;
    };
    let postgres = schema(db.url()).await;
    drop(db);
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(sqlite.len() > 50, "{} columns", sqlite.len());
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "migrations differ: only in SQLite {only_sqlite:?}; only in PostgreSQL {only_postgres:?}; \
         hint: server/migrations/sqlite and postgres are kept in step, file by file"
    );
}

/// Collapses runs of whitespace and the `\` of Rust string continuations, so SQL written over
/// several lines in a migration and in a Rust literal compares equal.
fn squeeze(sql: &str) -> String {
    sql.replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A claim reads only the open reset items through the partial index `reset_items_open`, an
/// item that ends asks whether its job has an open item left through `reset_items_open_job`,
/// and a worker looks for a due delivery through `reset_deliveries_due`. A
/// planner uses a partial index only for a statement whose condition implies the index's: those
/// statements repeat it word for word, on both engines. Without them every claim read past every
/// finished item ever written, and every finished item of a job read past the job's finished
/// items (docs/performance.md, "Inventory at scale").
#[test]
fn claims_repeat_the_open_items_index_condition() {
    let store = |file: &str| {
        squeeze(&std::fs::read_to_string(repo().join("server/src/store").join(file)).unwrap())
    };
    // (migration, index, the store file, how a statement that must use it starts, how many)
    let uses = [
        (
            "0019_scale_indexes.sql",
            "reset_items_open",
            "resets.rs",
            "SELECT id FROM reset_items WHERE",
            2,
        ),
        (
            "0020_job_open_items.sql",
            "reset_items_open_job",
            "resets.rs",
            "SELECT 1 FROM reset_items WHERE job_id = $1 AND",
            1,
        ),
        (
            "0022_deliveries.sql",
            "reset_deliveries_due",
            "deliveries.rs",
            "SELECT id FROM reset_deliveries WHERE",
            1,
        ),
    ];
    for engine in ["sqlite", "postgres"] {
        for (file, name, source, statement, count) in uses {
            let resets = store(source);
            let migration =
                std::fs::read_to_string(repo().join(format!("server/migrations/{engine}/{file}")))
                    .unwrap();
            let index = squeeze(
                migration
                    .split(&format!("CREATE INDEX {name} "))
                    .nth(1)
                    .and_then(|rest| rest.split(';').next())
                    .unwrap_or_else(|| panic!("{engine}/{file} makes {name}")),
            );
            let condition = index
                .split_once(" WHERE ")
                .map(|(_, c)| c.to_string())
                .unwrap_or_else(|| panic!("{name} is a partial index"));
            let used = format!("{statement} {condition}");
            assert_eq!(
                resets.matches(&used).count(),
                count,
                "{engine}: {count} statement(s) in store/{source} read through {name}: each \
                 must repeat the index's condition `{condition}` as `{used}`"
            );
        }
    }
}

/// Lines of `files` where a message's literal holds a run of spaces between words: a broken
/// line continuation (a string split over two lines without its `\`, whose second line's
/// indentation ends up inside the message).
fn broken_continuations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let broken = literals(line).into_iter().any(|lit| {
                lit.find("        ")
                    .is_some_and(|i| !lit[..i].trim().is_empty() && !lit[i..].trim().is_empty())
            });
            if broken {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_message_hides_a_broken_line_continuation() {
    let found = broken_continuations(&sources());
    assert!(
        found.is_empty(),
        "string literals with a run of spaces inside (a line continuation without its `\\`?): \
         {found:#?}; hint: end the first line of the literal with `\\`"
    );
    let bad = [(
        "x.rs".to_string(),
        "    \"the target cannot be                      asked\",".to_string(),
    )];
    assert_eq!(broken_continuations(&bad).len(), 1, "the check catches one");
    let good = [(
        "x.rs".to_string(),
        "    \"the target cannot be \\\n     asked\", format!(\"{:<11} {}\", a, b)".to_string(),
    )];
    assert!(broken_continuations(&good).is_empty());
}
