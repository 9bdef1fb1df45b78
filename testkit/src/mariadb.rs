//! A private MariaDB server for connector tests, from the machine's own binaries: the shared
//! server has no TLS and its log settings belong to everyone. This one is
//! `mariadb-install-db`'s own, run as the `mysql` OS user on 127.0.0.1 and a port of its own,
//! with TLS on (a certificate made for it) and every log MariaDB has turned all the way up
//! (general log, slow log of every statement with its plan, the error log with every
//! warning), so tests can scan what the server itself wrote for secrets. Killed and removed
//! when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a MariaDB tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running private server.
pub struct MariaDb {
    dir: PathBuf,
    pub port: u16,
    /// `SHA256:…` (unpadded base64) of its TLS certificate's DER, computed by openssl.
    pub certificate_fingerprint: String,
    tls: Mutex<bool>,
    child: Mutex<Option<Child>>,
}

/// The logs a test reads: general, slow and error.
const LOGS: [&str; 3] = ["general.log", "slow.log", "error.log"];

impl MariaDb {
    /// Initialized, certified and started; about three seconds.
    pub fn start() -> MariaDb {
        let dir = std::env::temp_dir().join(format!("lockstep-mariadb-{}", crate::random_hex(6)));
        std::fs::create_dir(&dir).unwrap();
        run(Command::new("chmod").arg("700").arg(&dir));
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        run(Command::new("chmod").arg("600").arg(&key));
        let digest = run(Command::new("bash").arg("-c").arg(format!(
            "openssl x509 -outform der -in '{}' | openssl dgst -sha256 -binary | base64 -w0",
            cert.display()
        )))
        .stdout;
        let certificate_fingerprint = format!(
            "SHA256:{}",
            String::from_utf8(digest)
                .unwrap()
                .trim()
                .trim_end_matches('=')
        );
        run(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir));
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]));
        let server = MariaDb {
            dir,
            port: crate::agent::free_port(),
            certificate_fingerprint,
            tls: Mutex::new(true),
            child: Mutex::new(None),
        };
        server.start_again();
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts the server (again), with TLS unless [`Self::without_tls`] turned it off, and
    /// waits until it answers on its socket.
    pub fn start_again(&self) {
        let d = |name: &str| self.path(name).display().to_string();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d("data")))
            .arg("--user=mysql")
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d("sock")))
            .arg(format!("--pid-file={}", d("pid")))
            .arg(format!("--log-error={}", d("error.log")))
            .args([
                "--general-log=1",
                "--slow-query-log=1",
                "--long-query-time=0",
            ])
            .arg(format!("--general-log-file={}", d("general.log")))
            .arg(format!("--slow-query-log-file={}", d("slow.log")))
            .args([
                "--log-slow-verbosity=query_plan,explain",
                "--log-slow-admin-statements=1",
                "--log-warnings=9",
                "--innodb-buffer-pool-size=16M",
                "--skip-log-bin",
                "--max-connections=200",
            ]);
        if *self.tls.lock().unwrap() {
            cmd.arg(format!("--ssl-cert={}", d("cert.pem")))
                .arg(format!("--ssl-key={}", d("key.pem")));
        }
        let _ = std::fs::remove_file(self.path("sock"));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", d("sock")))
                .args(["-uroot", "ping"])
                .output()
                .unwrap();
            if ping.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: like a crash); [`Self::start_again`] brings it back.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again without TLS.
    pub fn without_tls(&self) {
        self.kill();
        *self.tls.lock().unwrap() = false;
        self.start_again();
    }

    /// Everything the server's own logs hold (general, slow and error logs).
    pub fn logs(&self) -> String {
        LOGS.iter()
            .map(|l| std::fs::read_to_string(self.path(l)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The general log: every connection and statement.
    pub fn general_log(&self) -> String {
        std::fs::read_to_string(self.path("general.log")).unwrap_or_default()
    }

    /// Runs `sql` as root over the server's socket, with the session kept out of the general
    /// and slow logs: the passwords tests give accounts stay out, which leaves the logs to
    /// show what Lockstep sent.
    pub fn sql(&self, sql: &str) -> String {
        let out = run(Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.path("sock").display()))
            .args(["-uroot", "-N", "-B", "-e"])
            .arg(format!(
                "SET SESSION sql_log_off = 1; SET SESSION log_slow_query = 0; {sql}"
            )));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Holds the global read lock (`FLUSH TABLES WITH READ LOCK`) from a client of its own
    /// until the returned process is killed or the server dies: every `ALTER USER` sent
    /// meanwhile waits, sent and unanswered.
    pub fn hold_global_read_lock(&self) -> Child {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.path("sock").display()))
            .args([
                "-uroot",
                "-e",
                "FLUSH TABLES WITH READ LOCK; SELECT SLEEP(120)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a mariadb client")
    }

    /// `mysql://127.0.0.1:PORT`, the resource's URL.
    pub fn url(&self) -> String {
        format!("mysql://127.0.0.1:{}", self.port)
    }

    /// Whether `user` logs in with `password` over TCP and TLS (an independent client:
    /// MariaDB's own, the password in a private options file), `None` when the server cannot
    /// be reached.
    pub fn logs_in(&self, user: &str, password: &str) -> Option<bool> {
        let options = self.path(&format!("client-{}.cnf", crate::random_hex(4)));
        write_private(
            &options,
            &format!("[client]\nuser={user}\npassword=\"{password}\"\n"),
        );
        let out = Command::new("mariadb")
            .arg(format!("--defaults-file={}", options.display()))
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string()])
            .args(["--ssl", "--connect-timeout=10", "-N", "-e", "SELECT 1"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&options);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Some(true)
        } else if err.contains("ERROR 1045") {
            Some(false)
        } else {
            None
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
