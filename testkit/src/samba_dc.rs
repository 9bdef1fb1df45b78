//! A Samba Active Directory domain controller for connector tests, from Debian's packages
//! extracted by `scripts/samba-deps.sh` (never installed): the domain `lockstep.test` is
//! provisioned once per test process as a template (about 9 s), and each `SambaDc` is a copy
//! (0.1 s) running as one `samba` process inside its own mount/PID/UTS namespaces, with the
//! extracted `/usr` overlaid on the machine's, on a loopback address of its own (LDAPS is on
//! the fixed port 636). The template allows a password to be changed at once and forgets the
//! old one at once (`old password allowed period = 0`, minimum age 0); complexity stays on,
//! as Windows has it. Killed and removed when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The domain's DNS name (and, upper-cased, its realm).
pub const DOMAIN: &str = "lockstep.test";
/// The directory under which users are created.
pub const USERS: &str = "CN=Users,DC=lockstep,DC=test";
/// The domain's administrator and the password it is provisioned with.
pub const ADMIN: &str = "Administrator";
pub const ADMIN_PW: &str = "Dc-Admin-Pw-1";

fn samba_root() -> PathBuf {
    std::env::var_os("LOCKSTEP_SAMBA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/lockstep-samba")
        })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a Samba tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `script` in a mount namespace of its own where `/usr` is the extracted Samba's over the
/// machine's.
fn in_overlay(script: &str) -> Command {
    let root = samba_root();
    assert!(
        root.join("usr/sbin/samba").exists(),
        "Samba is not extracted in {}: run ./scripts/samba-deps.sh",
        root.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--uts", "--propagation", "private", "bash", "-c"])
        .arg(format!(
            "set -e; mount -t overlay overlay -o ro,lowerdir={}/usr:/usr /usr; {script}",
            root.display()
        ));
    cmd
}

/// The template: provisioned once per process; (its folder, the certificate's fingerprint).
fn template() -> &'static (PathBuf, String) {
    static T: OnceLock<(PathBuf, String)> = OnceLock::new();
    T.get_or_init(|| {
        // One template per test process, named by its id; those of processes that are gone
        // (each holds a domain database and a private key) are removed first.
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.strip_prefix("lockstep-dc-template-");
                if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("lockstep-dc-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let (cert, key) = (pki.join("cert.pem"), pki.join("key.pem"));
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
                "/CN=dc1.lockstep.test",
                "-addext",
                "subjectAltName=DNS:dc1.lockstep.test,IP:127.0.0.53",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        run(Command::new("chmod").arg("600").arg(&key));
        std::fs::copy(&cert, pki.join("ca.pem")).unwrap();
        let digest = run(Command::new("bash").arg("-c").arg(format!(
            "openssl x509 -outform der -in '{}' | openssl dgst -sha256 -binary | base64 -w0",
            cert.display()
        )))
        .stdout;
        let fingerprint = format!(
            "SHA256:{}",
            String::from_utf8(digest)
                .unwrap()
                .trim()
                .trim_end_matches('=')
        );
        let d = dir.display();
        run(&mut in_overlay(&format!(
            "mount -t tmpfs tmpfs /run; hostname dc1; \
             samba-tool domain provision --realm=LOCKSTEP.TEST --domain=LOCKSTEP \
             --server-role=dc --dns-backend=NONE --adminpass='{ADMIN_PW}' --host-name=dc1 \
             --host-ip=127.0.0.53 --targetdir={d}/dc --option='interfaces=127.0.0.53/8' \
             --option='bind interfaces only=yes' --option='server services=ldap kdc' \
             --option='pid directory={d}/dc/run' --option='tls keyfile={d}/pki/key.pem' \
             --option='tls certfile={d}/pki/cert.pem' --option='tls cafile={d}/pki/ca.pem' \
             > {d}/provision.log 2>&1; \
             sed -i '/^\\[global\\]/a old password allowed period = 0' {d}/dc/etc/smb.conf; \
             samba-tool domain passwordsettings set --min-pwd-age=0 -s {d}/dc/etc/smb.conf \
             > /dev/null"
        )));
        let conf = std::fs::read_to_string(dir.join("dc/etc/smb.conf")).unwrap();
        assert!(conf.contains("old password allowed period = 0"), "{conf}");
        (dir, fingerprint)
    })
}

/// A loopback address whose port 636 is free, from 127.0.0.20 to .249, starting where this
/// process's id points so that test processes running at once seldom try the same ones.
fn free_address() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let start = std::process::id() % 230;
    for _ in 0..230 {
        let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let ip = format!("127.0.0.{}", 20 + (start + n) % 230);
        if std::net::TcpListener::bind((ip.as_str(), 636)).is_ok() {
            return ip;
        }
    }
    panic!("no free loopback address for a domain controller");
}

/// A running domain controller.
pub struct SambaDc {
    dir: PathBuf,
    pub ip: String,
    /// `SHA256:…` (unpadded base64) of its TLS certificate's DER, computed by openssl.
    pub certificate_fingerprint: String,
    child: Mutex<Option<Child>>,
}

impl SambaDc {
    /// A copy of the template on an address of its own, started.
    pub fn start() -> SambaDc {
        let (template, fingerprint) = template();
        let dir = std::env::temp_dir().join(format!("lockstep-dc-{}", crate::random_hex(6)));
        run(Command::new("cp").arg("-a").arg(template).arg(&dir));
        let ip = free_address();
        let conf_path = dir.join("dc/etc/smb.conf");
        let conf = std::fs::read_to_string(&conf_path)
            .unwrap()
            .replace(&template.display().to_string(), &dir.display().to_string())
            .replace("127.0.0.53/8", &format!("{ip}/8"));
        std::fs::write(&conf_path, conf).unwrap();
        let dc = SambaDc {
            dir,
            ip,
            certificate_fingerprint: fingerprint.clone(),
            child: Mutex::new(None),
        };
        dc.start_again();
        dc
    }

    /// Starts the DC (again) and waits until LDAPS answers.
    pub fn start_again(&self) {
        let root = samba_root();
        let script = format!(
            "set -e; mount -t overlay overlay -o ro,lowerdir={}/usr:/usr /usr; \
             mount -t tmpfs tmpfs /run; hostname dc1; \
             exec samba -M single --foreground --no-process-group -s {}/dc/etc/smb.conf",
            root.display(),
            self.dir.display()
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "bash",
                "-c",
            ])
            .arg(script)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("samba.log")).unwrap())
            .spawn()
            .expect("start samba");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect((self.ip.as_str(), 636)).is_err() {
            assert!(
                Instant::now() < deadline,
                "samba did not start: {}",
                std::fs::read_to_string(self.dir.join("samba.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the DC (SIGKILL: like a crash); [`Self::start_again`] brings it back.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The port is free once the namespace's last process is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.ip.as_str(), 636)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ldaps://IP`, the resource's URL.
    pub fn url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    fn secret_file(&self, text: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(format!("pw-{}", crate::random_hex(4)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    /// Runs OpenLDAP's `tool` (ldapsearch, ldapmodify) against the DC over LDAPS, bound as
    /// `who` with `password` (from a private file, never argv), with `args`.
    fn ldap_tool(&self, tool: &str, who: &str, password: &str, args: &str) -> Output {
        let pw = self.secret_file(password);
        let out = in_overlay(&format!(
            "LDAPTLS_REQCERT=never {tool} -x -H ldaps://{} -D '{who}' -y {} {args}",
            self.ip,
            pw.display()
        ))
        .output()
        .unwrap();
        let _ = std::fs::remove_file(pw);
        out
    }

    /// Creates enabled users `names` with `password`, in one LDAP request each, as the
    /// administrator.
    pub fn create_users(&self, names: &[&str], password: &str) {
        use base64::Engine as _;
        let quoted: Vec<u8> = format!("\"{password}\"")
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let value = base64::engine::general_purpose::STANDARD.encode(quoted);
        let mut ldif = String::new();
        for n in names {
            ldif.push_str(&format!(
                "dn: CN={n},{USERS}\nchangetype: add\nobjectClass: user\nsAMAccountName: {n}\n\
                 userPrincipalName: {n}@{DOMAIN}\nunicodePwd:: {value}\n\
                 userAccountControl: 512\n\n"
            ));
        }
        let file = self.secret_file(&ldif);
        let out = self.ldap_tool(
            "ldapmodify",
            &format!("{ADMIN}@{DOMAIN}"),
            ADMIN_PW,
            &format!("-f {}", file.display()),
        );
        let _ = std::fs::remove_file(file);
        assert!(
            out.status.success(),
            "creating users: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `user` binds with `password` (an independent client: OpenLDAP's), `None` when
    /// the DC cannot be reached.
    pub fn logs_in(&self, user: &str, password: &str) -> Option<bool> {
        let out = self.ldap_tool(
            "ldapsearch",
            &format!("{user}@{DOMAIN}"),
            password,
            "-b '' -s base dn",
        );
        match out.status.code() {
            Some(0) => Some(true),
            Some(49) => Some(false),
            _ => None,
        }
    }

    /// Runs `samba-tool ARGS -s smb.conf` against the domain's database.
    pub fn samba_tool(&self, args: &str) -> String {
        let out = run(&mut in_overlay(&format!(
            "samba-tool {args} -s {}/dc/etc/smb.conf",
            self.dir.display()
        )));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The folder the DC lives in (its database, configuration and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
