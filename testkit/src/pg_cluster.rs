//! A private PostgreSQL cluster for connector tests: the machine's server trusts every local
//! connection, so it cannot show whether a password is right. This one is `initdb`'s own, run
//! as the `postgres` OS user on 127.0.0.1 and a port of its own, with `scram-sha-256` for
//! every TCP login, TLS on (a certificate made for it), and every statement logged
//! (`log_statement = all`, `log_min_error_statement = error`) so tests can scan the server's
//! own log for secrets. Stopped (`immediate`) and removed when dropped.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

/// The newest installed PostgreSQL's binaries (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let v = versions.last().expect("a PostgreSQL version installed");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running private cluster.
pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
    /// `SHA256:…` (unpadded base64) of its TLS certificate's DER, computed by openssl.
    pub certificate_fingerprint: String,
}

impl PgCluster {
    /// initdb, a certificate, the settings above, started; about a second.
    pub fn start() -> PgCluster {
        let dir = std::env::temp_dir().join(format!("lockstep-pg-{}", crate::random_hex(6)));
        std::fs::create_dir(&dir).unwrap();
        // The postgres user must reach its directory inside.
        run(Command::new("chmod").arg("755").arg(&dir));
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let data = dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ]));
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
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
            .arg(&cert));
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(&key)
            .arg(&cert));
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
        let port = crate::agent::free_port();
        let sock = dir.join("sock");
        std::fs::create_dir(&sock).unwrap();
        run(Command::new("chown").arg("postgres:postgres").arg(&sock));
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
             password_encryption = 'scram-sha-256'\nlog_statement = 'all'\n\
             log_min_error_statement = 'error'\nlog_connections = on\nfsync = off\n",
            sock.display(),
            cert.display(),
            key.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        drop(f);
        let cluster = PgCluster {
            dir,
            port,
            certificate_fingerprint,
        };
        cluster.pg_ctl("start");
        cluster
    }

    fn pg_ctl(&self, verb: &str) {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-m", "immediate", verb]);
        run(&mut cmd);
    }

    /// Stops the server (`immediate`: like a crash); [`Self::start_again`] brings it back.
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    /// Appends `line` to `postgresql.conf` (takes effect at the next start or reload).
    pub fn configure(&self, line: &str) {
        let path = self.dir.join("data").join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }

    /// Puts `line` first in `pg_hba.conf` (so it decides before the others) and reloads.
    pub fn hba_first(&self, line: &str) {
        let path = self.dir.join("data").join("pg_hba.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}\n{text}")).unwrap();
        self.pg_ctl("reload");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Everything the server logged (every statement, every error with its statement).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `sql` as the superuser over the cluster's socket (trusted), with statement
    /// logging off for the session: the passwords tests start roles with stay out of the log,
    /// which is left to show what Lockstep sent.
    pub fn sql(&self, sql: &str) -> String {
        let out = run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("psql"))
            .arg("-h")
            .arg(self.dir.join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A"])
            .args(["-c", "SET log_statement = 'none'", "-c", sql]));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `postgres://127.0.0.1:PORT/postgres`, the resource's URL.
    pub fn url(&self) -> String {
        format!("postgres://127.0.0.1:{}/postgres", self.port)
    }

    /// Whether `role` logs in with `password` over TLS (an independent client: sqlx's own
    /// SCRAM), `None` when the server cannot be reached.
    pub async fn logs_in(&self, role: &str, password: &str) -> Option<bool> {
        use sqlx::ConnectOptions;
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(role)
            .password(password)
            .database("postgres")
            .ssl_mode(sqlx::postgres::PgSslMode::Require);
        match tokio::time::timeout(Duration::from_secs(10), options.connect()).await {
            Ok(Ok(c)) => {
                let _ = sqlx::Connection::close(c).await;
                Some(true)
            }
            Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("28P01") => {
                Some(false)
            }
            _ => None,
        }
    }

    /// Registers this cluster as a PostgreSQL resource `name` ([`crate::db_resource`]).
    pub async fn register(
        &self,
        api: &crate::Api,
        token: &str,
        name: &str,
        admin: (&str, &str),
        logins: &[&str],
        password: &str,
    ) -> (String, String, Vec<(String, String)>) {
        crate::db_resource::register(
            api,
            token,
            (name, "PostgreSQL", &self.url()),
            admin,
            logins,
            password,
        )
        .await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
