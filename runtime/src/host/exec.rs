//! Running a granted program: absolute path, no shell, cleared environment, working directory
//! `/`, standard input from the guest, capped output, killed at the deadline.
//!
//! Every program runs as PID 1 of its own PID namespace (`unshare --pid --fork --kill-child`):
//! when it exits, or is killed at the deadline, the kernel kills everything left in the
//! namespace, including what called `setsid()`, double-forked or daemonized, which a process
//! group kill would miss. Where no PID namespace can be made, no program is started.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::HostState;
use super::bindings::lockstep::listener::exec::{Host, Output};
use super::bindings::lockstep::listener::types::HostError;

impl Host for HostState {
    async fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<Output, HostError> {
        self.authorize_program("exec", &program, &args)?;
        let out = run_program(&program, &args, &stdin, self.remaining(), self.output_cap())
            .await
            .map_err(HostError::Failed)?;
        out.into_guest(|| format!("{program} was killed at the listener's deadline"))
    }
}

/// A finished program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOutput {
    /// Exit status, or -1 when killed (by a signal or the deadline).
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Reads at most `cap` bytes and discards the rest, so a chatty program cannot fill memory
/// and cannot block on a full pipe either.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Kills a process group with SIGKILL (through kill(1): no unsafe code for one signal).
async fn kill_group(group: Option<u32>) {
    if let Some(pgid) = group {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Where `unshare(1)` (util-linux) lives.
const UNSHARE: [&str; 2] = ["/usr/bin/unshare", "/bin/unshare"];

/// The `unshare` invocation that gives a program a PID namespace of its own, found once:
/// plain (as root), else inside a user namespace mapping the current user (unprivileged).
/// `--kill-child` makes the program die with `unshare` (killed at the deadline), and a PID
/// namespace dies with its PID 1.
fn containment() -> Result<&'static [String], String> {
    static FOUND: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let unshare = UNSHARE
                .iter()
                .find(|p| Path::new(p).is_file())
                .ok_or("no unshare(1) on this host: programs cannot be contained")?;
            let plain = ["--pid", "--fork", "--kill-child"];
            let user = [
                "--user",
                "--map-current-user",
                "--pid",
                "--fork",
                "--kill-child",
            ];
            for flags in [&plain[..], &user[..]] {
                let works = std::process::Command::new(unshare)
                    .args(flags)
                    .args(["--", "/bin/true"])
                    .env_clear()
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if works {
                    let mut found = vec![unshare.to_string()];
                    found.extend(flags.iter().map(|f| f.to_string()));
                    found.push("--".into());
                    return Ok(found);
                }
            }
            Err(
                "this host cannot give a program its own PID namespace: programs cannot be \
                 contained, so none is started"
                    .into(),
            )
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// The executable file `program` names: a path as written, a bare name searched on `PATH`.
fn resolve(program: &str) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| executable(p))
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_absolute() && executable(p))
    };
    found.ok_or_else(|| format!("cannot start {program}: no such executable file"))
}

/// Runs `program` with `args`. The caller has checked the grant.
pub async fn run_program(
    program: &str,
    args: &[String],
    stdin: &[u8],
    timeout: Duration,
    output_cap: usize,
) -> Result<ProgramOutput, String> {
    if timeout.is_zero() {
        return Err(format!(
            "no time left before the listener's deadline to start {program}"
        ));
    }
    let path = resolve(program)?;
    let (unshare, flags) = containment()?
        .split_first()
        .expect("containment names unshare");
    let mut child = tokio::process::Command::new(unshare)
        .args(flags)
        .arg(&path)
        .args(args)
        .env_clear()
        .current_dir("/")
        // Its own process group, so the program and everything it starts can be killed
        // together: nothing a listener runs outlives the call.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let mut child_stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = stdin.to_vec();
    let feed = async move {
        if let Some(mut s) = child_stdin.take() {
            // A program that does not read its input closes the pipe: not an error here.
            let _ = s.write_all(&input).await;
        }
    };
    let out = async move {
        match stdout {
            Some(s) => read_capped(s, output_cap).await,
            None => Vec::new(),
        }
    };
    let err = async move {
        match stderr {
            Some(s) => read_capped(s, output_cap).await,
            None => Vec::new(),
        }
    };
    let group = child.id();
    let wait = async {
        let status = child.wait().await;
        // Leftover children would keep the output pipes open (and outlive the listener).
        kill_group(group).await;
        status
    };
    let run = async {
        let ((), stdout, stderr, status) = tokio::join!(feed, out, err, wait);
        (stdout, stderr, status)
    };
    let result = tokio::time::timeout(timeout, run).await;
    if result.is_err() {
        kill_group(group).await;
    }
    match result {
        Ok((stdout, stderr, status)) => {
            let status = status.map_err(|e| format!("waiting for {program}: {e}"))?;
            Ok(ProgramOutput {
                status: status.code().unwrap_or(-1),
                stdout,
                stderr,
                timed_out: false,
            })
        }
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => Ok(ProgramOutput {
            status: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
            timed_out: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdin_reaches_the_program_and_the_environment_is_empty() {
        let out = run_program(
            "/usr/bin/wc",
            &["-c".into()],
            b"12345",
            Duration::from_secs(5),
            1024,
        )
        .await
        .unwrap();
        assert_eq!(out.status, 0);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
        let env = run_program("/usr/bin/env", &[], b"", Duration::from_secs(5), 1024)
            .await
            .unwrap();
        assert_eq!(env.stdout, b"", "no variable is passed to a child");
    }

    #[tokio::test]
    async fn output_is_capped_and_the_deadline_kills() {
        let out = run_program("/usr/bin/yes", &[], b"", Duration::from_millis(300), 100)
            .await
            .unwrap();
        assert!(out.timed_out);
        let out = run_program(
            "/usr/bin/head",
            &["-c".into(), "100000".into(), "/dev/zero".into()],
            b"",
            Duration::from_secs(5),
            100,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.len(), 100);
        assert_eq!(out.status, 0);
    }

    fn processes_with(needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                // Arguments are NUL-separated in cmdline.
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(needle)
                    })
                    .unwrap_or(false)
            })
            .count()
    }

    #[tokio::test]
    async fn nothing_a_program_starts_outlives_the_call() {
        let args = vec!["-c".to_string(), "sleep 4242 & echo started".to_string()];
        let out = run_program("/bin/sh", &args, b"", Duration::from_secs(5), 1024)
            .await
            .unwrap();
        assert_eq!(out.stdout, b"started\n");
        assert!(
            !out.timed_out,
            "a finished program is not reported as killed"
        );
        let args = vec!["-c".to_string(), "sleep 4343 & sleep 4444".to_string()];
        let out = run_program("/bin/sh", &args, b"", Duration::from_millis(300), 1024)
            .await
            .unwrap();
        assert!(out.timed_out);
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in ["sleep 4242", "sleep 4343", "sleep 4444"] {
            assert_eq!(processes_with(n), 0, "{n} outlived its listener call");
        }
    }

    #[tokio::test]
    async fn nothing_a_program_starts_survives_it_even_in_a_new_session() {
        // setsid() leaves the process group the host kills; daemonizing too.
        let script = "setsid sleep 4545 </dev/null >/dev/null 2>&1 & \
                      setsid -f sleep 4646 </dev/null >/dev/null 2>&1; \
                      (setsid sleep 4747 </dev/null >/dev/null 2>&1 &); echo started";
        let args = vec!["-c".to_string(), script.to_string()];
        let out = run_program("/bin/sh", &args, b"", Duration::from_secs(5), 1024)
            .await
            .unwrap();
        assert_eq!(out.stdout, b"started\n");
        assert_eq!(out.status, 0);
        // And at the deadline.
        let script = "setsid -f sleep 4848 </dev/null >/dev/null 2>&1; sleep 4949";
        let args = vec!["-c".to_string(), script.to_string()];
        let out = run_program("/bin/sh", &args, b"", Duration::from_millis(500), 1024)
            .await
            .unwrap();
        assert!(out.timed_out);
        tokio::time::sleep(Duration::from_millis(300)).await;
        for n in [
            "sleep 4545",
            "sleep 4646",
            "sleep 4747",
            "sleep 4848",
            "sleep 4949",
        ] {
            assert_eq!(processes_with(n), 0, "{n} outlived its listener call");
        }
    }

    #[tokio::test]
    async fn a_bare_name_is_found_on_path() {
        let out = run_program("true", &[], b"", Duration::from_secs(5), 10)
            .await
            .unwrap();
        assert_eq!(out.status, 0);
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let err = run_program("/nonexistent/prog", &[], b"", Duration::from_secs(1), 10)
            .await
            .unwrap_err();
        assert!(err.contains("cannot start /nonexistent/prog"), "{err}");
    }
}
