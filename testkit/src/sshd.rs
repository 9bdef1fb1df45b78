//! Real OpenSSH reset targets for tests.
//!
//! Each target is Debian's sshd (with real PAM, `chpasswd` and `sudo`) running as PID 1 of its own
//! mount/PID/UTS namespaces with a private `/etc` (an overlay whose upper dir is the target's
//! state dir), so the machine's own accounts are never read or written. It listens on its own
//! loopback address (127.0.0.2–254) and port. `scripts/testbed-deps.sh` provides sshd and sudo;
//! `tests/testbed/target.sh` does the mounts. `docs/CONTRIBUTING.md` ("Test targets") says more.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An account on a target.
#[derive(Clone, Debug)]
pub struct TargetUser {
    pub name: String,
    pub password: String,
    /// Member of the `sudo` group (may run `sudo -S`).
    pub sudo: bool,
    /// May sudo without a password (`NOPASSWD: ALL`, a common sudoers line).
    pub nopasswd: bool,
    /// Its own sudoers rule (after the user name), e.g. `ALL=(root) NOPASSWD: /usr/sbin/chpasswd`.
    pub sudo_rule: Option<String>,
}

impl TargetUser {
    pub fn new(name: &str, password: &str) -> TargetUser {
        TargetUser {
            name: name.into(),
            password: password.into(),
            sudo: false,
            nopasswd: false,
            sudo_rule: None,
        }
    }

    /// A user outside the sudo group with only its own sudoers rule.
    pub fn with_sudo_rule(name: &str, password: &str, rule: &str) -> TargetUser {
        TargetUser {
            sudo_rule: Some(rule.into()),
            ..TargetUser::new(name, password)
        }
    }

    /// A sudoer whose sudo never asks for a password.
    pub fn nopasswd_sudoer(name: &str, password: &str) -> TargetUser {
        TargetUser {
            nopasswd: true,
            ..TargetUser::sudoer(name, password)
        }
    }

    pub fn sudoer(name: &str, password: &str) -> TargetUser {
        TargetUser {
            sudo: true,
            ..TargetUser::new(name, password)
        }
    }
}

/// A running target. Killed (with everything inside its namespaces) on drop.
pub struct SshTarget {
    child: Option<Child>,
    pub state: tempfile::TempDir,
    pub ip: String,
    pub port: u16,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The folder with the extracted sshd and sudo (installed once per machine).
pub fn testbed_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/testbed-deps.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/testbed-deps.sh");
        assert!(out.status.success(), "scripts/testbed-deps.sh failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        PathBuf::from(text.lines().last().expect("testbed dir").trim())
    })
}

/// SHA-512 crypt hash, with the password on stdin (never in argv). Computed once per password
/// (targets with hundreds of users share a starting password).
fn hash_password(password: &str) -> String {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(password) {
        return h.clone();
    }
    let h = openssl_hash(password);
    cache
        .lock()
        .unwrap()
        .insert(password.to_string(), h.clone());
    h
}

fn openssl_hash(password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A loopback address and port nobody listens on now.
fn free_endpoint() -> (String, u16) {
    for _ in 0..100 {
        let ip = format!("127.0.0.{}", 2 + rand_byte() % 250);
        if let Ok(l) = std::net::TcpListener::bind((ip.as_str(), 0)) {
            let port = l.local_addr().unwrap().port();
            return (ip, port);
        }
    }
    panic!("no free loopback endpoint");
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    let f = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut &f, &mut b).expect("read urandom");
    b[0]
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl SshTarget {
    /// Starts a target whose root password is `root_password`, with `users`.
    pub fn start(root_password: &str, users: &[TargetUser]) -> SshTarget {
        assert!(
            is_root(),
            "SSH target tests need root (unshare, mount); run the test suite as root"
        );
        let state = tempfile::tempdir().unwrap();
        let (ip, port) = free_endpoint();
        let s = state.path();
        let upper = s.join("upper");
        for d in ["upper/ssh", "upper/pam.d", "work", "home"] {
            std::fs::create_dir_all(s.join(d)).unwrap();
        }
        let mut passwd = String::from(
            "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        );
        let mut shadow = format!(
            "root:{}:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
            hash_password(root_password)
        );
        let mut group = String::from("root:x:0:\nshadow:x:42:\nnogroup:x:65534:\n");
        let mut gshadow = String::from("root:*::\nshadow:*::\nnogroup:*::\n");
        let sudoers: Vec<&str> = users
            .iter()
            .filter(|u| u.sudo)
            .map(|u| u.name.as_str())
            .collect();
        group.push_str(&format!("sudo:x:27:{}\n", sudoers.join(",")));
        gshadow.push_str(&format!("sudo:*::{}\n", sudoers.join(",")));
        for (i, u) in users.iter().enumerate() {
            let id = 1001 + i;
            passwd.push_str(&format!("{0}:x:{id}:{id}::/home/{0}:/bin/sh\n", u.name));
            shadow.push_str(&format!(
                "{}:{}:19000:0:99999:7:::\n",
                u.name,
                hash_password(&u.password)
            ));
            group.push_str(&format!("{}:x:{id}:\n", u.name));
            gshadow.push_str(&format!("{}:!::\n", u.name));
            let home = s.join("home").join(&u.name);
            std::fs::create_dir_all(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(id as u32), Some(id as u32)).unwrap();
        }
        write(&upper.join("passwd"), &passwd, 0o644);
        write(&upper.join("group"), &group, 0o644);
        write(&upper.join("shadow"), &shadow, 0o640);
        write(&upper.join("gshadow"), &gshadow, 0o640);
        for f in ["shadow", "gshadow"] {
            std::os::unix::fs::chown(upper.join(f), Some(0), Some(42)).unwrap();
        }
        let host = format!("t{port}");
        write(&upper.join("hostname"), &format!("{host}\n"), 0o644);
        write(
            &upper.join("hosts"),
            &format!("127.0.0.1 localhost\n127.0.1.1 {host}\n"),
            0o644,
        );
        write(
            &upper.join("ssh/sshd_config"),
            &format!(
                "ListenAddress {ip}:{port}\nHostKey /etc/ssh/ssh_host_ed25519_key\nUsePAM yes\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin yes\nMaxStartups 200:30:400\nMaxSessions 100\nUseDNS no\n\
                 PidFile /run/sshd.pid\n"
            ),
            0o644,
        );
        // No 2-second delay after a wrong password: failure tests stay fast.
        write(
            &upper.join("pam.d/common-auth"),
            "auth [success=1 default=ignore] pam_unix.so nullok nodelay\n\
             auth requisite pam_deny.so\nauth required pam_permit.so\n",
            0o644,
        );
        write(
            &upper.join("pam.d/sshd"),
            "@include common-auth\naccount required pam_nologin.so\n@include common-account\n\
             @include common-session\n@include common-password\n",
            0o644,
        );
        write(
            &upper.join("pam.d/sudo"),
            "@include common-auth\n@include common-account\n\
             @include common-session-noninteractive\n",
            0o644,
        );
        let mut sudoers = String::from(
            "Defaults !lecture\n\
             Defaults secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
             root ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n",
        );
        for u in users.iter().filter(|u| u.nopasswd) {
            sudoers.push_str(&format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", u.name));
        }
        for u in users {
            if let Some(rule) = &u.sudo_rule {
                sudoers.push_str(&format!("{} {rule}\n", u.name));
            }
        }
        write(&upper.join("sudoers"), &sudoers, 0o440);
        let mut target = SshTarget {
            child: None,
            state,
            ip,
            port,
        };
        target.new_host_key();
        target.launch();
        target
    }

    /// The host PID of the target's sshd (PID 1 of its namespaces), for `nsenter`.
    pub fn namespace_pid(&self) -> u32 {
        let unshare = self.child.as_ref().expect("target running").id();
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .expect("children of unshare");
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the target's first process")
    }

    /// Changes a password on the target behind Lockstep's back (chpasswd inside its
    /// namespaces, the password on stdin).
    pub fn change_password_locally(&self, user: &str, password: &str) {
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &self.namespace_pid().to_string(),
                "-m",
                "-u",
                "--",
                "/usr/sbin/chpasswd",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nsenter chpasswd");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{user}:{password}\n").as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "chpasswd in the target failed"
        );
    }

    /// Replaces the host key (takes effect at the next start).
    pub fn new_host_key(&mut self) {
        let key = self.state.path().join("upper/ssh/ssh_host_ed25519_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
    }

    /// The host key's public half, OpenSSH text form.
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.state.path().join("upper/ssh/ssh_host_ed25519_key.pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.state.path().join("sshd.log")).unwrap();
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
            ])
            .arg(repo_root().join("tests/testbed/target.sh"))
            .arg(self.state.path())
            .arg(testbed_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start target");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.listening() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("target exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "target never listened: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether sshd listens (checked on the socket table, not with a probe connection).
    fn listening(&self) -> bool {
        let out = Command::new("ss")
            .args(["-Hltn", &format!("src {}:{}", self.ip, self.port)])
            .output()
            .expect("ss");
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills sshd and every session inside the target.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.listening() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same address with the same accounts (as they are now).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Makes the target refuse every password change from now on (its PAM password stack
    /// denies), as a target with strict password rules would refuse the passwords it is given.
    pub fn deny_password_changes(&self) {
        self.write_inside(
            "/etc/pam.d/common-password",
            "password requisite pam_deny.so\n",
        );
    }

    /// Writes `text` to `path` inside the running target, through its overlay (writing the
    /// overlay's upper dir directly is not seen by a target that already read the file).
    pub fn write_inside(&self, path: &str, text: &str) {
        let pid = self.namespace_pid().to_string();
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-m",
                "--",
                "/bin/sh",
                "-c",
                "cat > \"$1\"",
                "sh",
                path,
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nsenter sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "writing {path} in the target"
        );
    }

    /// From now on, every password the target's PAM stack changes (chpasswd's, one per line it
    /// applies) is written down: [`Self::password_changes`] reads them back. `pam_exec` runs after
    /// `pam_unix` has stored the new hash, in the update phase only.
    pub fn count_password_changes(&self) {
        self.write_inside(
            "/etc/lockstep-count-change",
            "#!/bin/sh\n[ \"$PAM_TYPE\" = password ] && echo \"$PAM_USER\" >> /etc/lockstep-changes\n\
             exit 0\n",
        );
        let pid = self.namespace_pid().to_string();
        let chmod = Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-m",
                "--",
                "/bin/chmod",
                "0755",
                "/etc/lockstep-count-change",
            ])
            .status()
            .expect("nsenter chmod");
        assert!(chmod.success(), "chmod in the target");
        self.write_inside(
            "/etc/pam.d/chpasswd",
            "@include common-password\n\
             password optional pam_exec.so quiet /etc/lockstep-count-change\n",
        );
    }

    /// How many times each login's password was changed since [`Self::count_password_changes`].
    pub fn password_changes(&self) -> std::collections::BTreeMap<String, usize> {
        let text = std::fs::read_to_string(self.state.path().join("upper/lockstep-changes"))
            .unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for login in text.lines() {
            *counts.entry(login.to_string()).or_default() += 1;
        }
        counts
    }

    /// Makes the target refuse password changes for `user` only (its PAM password stack
    /// denies that user), as a target whose rules reject one account's new password would.
    pub fn refuse_password_changes_for(&self, user: &str) {
        self.write_inside(
            "/etc/pam.d/common-password",
            &format!(
                "password requisite pam_succeed_if.so quiet user != {user}\n\
                 password [success=1 default=ignore] pam_unix.so obscure yescrypt\n\
                 password requisite pam_deny.so\npassword required pam_permit.so\n"
            ),
        );
    }

    /// Makes every session on the target speak German (`LANG=de_DE.UTF-8` from
    /// `/etc/environment` through pam_env, the locale compiled inside the target's private
    /// `/usr`), so `chpasswd` and sudo answer in German.
    pub fn speak_german(&self) {
        let pid = self.namespace_pid().to_string();
        let status = Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-m",
                "--",
                "localedef",
                "-i",
                "de_DE",
                "-f",
                "UTF-8",
            ])
            .arg("/usr/lib/locale/de_DE.UTF-8")
            .stdout(Stdio::null())
            .status()
            .expect("nsenter localedef");
        // localedef exits 1 for warnings about the locale source; the result is usable.
        assert!(status.code().is_some_and(|c| c <= 1), "localedef failed");
        self.write_inside("/etc/environment", "LANG=de_DE.UTF-8\n");
        self.write_inside(
            "/etc/pam.d/sshd",
            "@include common-auth\naccount required pam_nologin.so\n@include common-account\n\
             session required pam_env.so readenv=1\n\
             @include common-session\n@include common-password\n",
        );
    }

    /// Kills `user`'s SSH sessions on the target (sshd's per-session processes and what runs
    /// in them), as a network cut or a restarted sshd would end them. Only processes inside
    /// the target's own PID namespace are seen and signalled.
    /// Returns whether there was a session to cut.
    pub fn cut_sessions_of(&self, user: &str) -> bool {
        let pid = self.namespace_pid().to_string();
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-m", "-p", "--", "pkill", "-KILL", "-f"])
            .arg(format!("^sshd: {user}"))
            .status()
            .expect("nsenter pkill");
        status.success()
    }

    /// Undoes [`Self::refuse_password_changes_for`] and [`Self::deny_password_changes`]: the
    /// stock password stack again.
    pub fn allow_password_changes(&self) {
        self.write_inside(
            "/etc/pam.d/common-password",
            "password [success=1 default=ignore] pam_unix.so obscure yescrypt\n\
             password requisite pam_deny.so\npassword required pam_permit.so\n",
        );
    }

    /// The user's current shadow hash, as the target stores it.
    pub fn shadow_hash(&self, user: &str) -> String {
        let shadow = std::fs::read_to_string(self.state.path().join("upper/shadow")).unwrap();
        shadow
            .lines()
            .find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no user {user} on the target"))
    }
}

impl Drop for SshTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when running as root (reads /proc, no libc call).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
