//! The agentless SSH reset against real OpenSSH targets (sshd in namespaces with a private
//! /etc; see testkit/src/sshd.rs): root and sudo admins, verification by login, and the
//! failures a user meets (wrong admin password, target down, host key changed).

use lockstep_server::inventory::reset_command::ResetCommand;
use lockstep_server::reset::batch::CommandBatcher;
use lockstep_server::reset::connector::ssh::{SshConnector, accepts};
use lockstep_server::reset::connector::{
    self, AdminKind, ApplyFailure, Held, TargetFailure, Timeouts,
};
use lockstep_server::reset::pool::AdminPool;
use lockstep_server::reset::remote;
use lockstep_server::reset::ssh::{self, Endpoint};
use lockstep_server::vault::Secret;
use lockstep_testkit::sshd::{SshTarget, TargetUser};

fn secret(s: &str) -> Secret {
    Secret::new(s.to_string())
}

fn endpoint(t: &SshTarget, pin: Option<String>) -> Endpoint {
    Endpoint {
        host: t.ip.clone(),
        port: t.port,
        pinned_host_key: pin,
    }
}

fn quick() -> Timeouts {
    Timeouts {
        connect: std::time::Duration::from_secs(10),
        command: std::time::Duration::from_secs(10),
    }
}

/// Changes app's password through `admin` and checks the target afterwards.
async fn change_and_verify(kind: AdminKind, admin: &str, admin_pw: &str, users: &[TargetUser]) {
    let t = SshTarget::start("Root-Pw-1", users);
    let e = endpoint(&t, None);
    let before = t.shadow_hash("app");
    let conn = ssh::connect(&e, admin, &secret(admin_pw), quick())
        .await
        .expect("admin login");
    assert!(conn.host_key.starts_with("SHA256:"), "{}", conn.host_key);
    let new = secret("N3w-Pass:word with spaces!");
    remote::apply(
        &conn,
        kind,
        &secret(admin_pw),
        &ResetCommand::chpasswd(),
        "app",
        &new,
        &e.label(),
    )
    .await
    .expect("apply");
    conn.close().await;
    assert_ne!(t.shadow_hash("app"), before, "the target stores a new hash");
    let pinned = endpoint(
        &t,
        Some(
            ssh::connect(&e, "app", &new, quick())
                .await
                .unwrap()
                .host_key,
        ),
    );
    assert!(accepts(&pinned, "app", &new, quick()).await.unwrap());
    assert!(
        !accepts(&pinned, "app", &secret("App-Pw-1"), quick())
            .await
            .unwrap(),
        "the old password no longer logs in"
    );
    let log = t.log();
    assert!(log.contains("Accepted password for app"), "{log}");
    assert!(log.contains("Failed password for app"), "{log}");
}

#[tokio::test]
async fn a_root_admin_changes_a_password_that_then_logs_in() {
    change_and_verify(
        AdminKind::Root,
        "root",
        "Root-Pw-1",
        &[TargetUser::new("app", "App-Pw-1")],
    )
    .await;
}

#[tokio::test]
async fn a_sudo_admin_changes_a_password_with_sudo_on_stdin() {
    change_and_verify(
        AdminKind::Sudo,
        "admin",
        "Admin-Pw-1",
        &[
            TargetUser::sudoer("admin", "Admin-Pw-1"),
            TargetUser::new("app", "App-Pw-1"),
        ],
    )
    .await;
}

#[tokio::test]
async fn wrong_admin_passwords_change_nothing() {
    let t = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::sudoer("admin", "Admin-Pw-1"),
            TargetUser::new("app", "App-Pw-1"),
        ],
    );
    let e = endpoint(&t, None);
    let before = t.shadow_hash("app");
    match ssh::connect(&e, "root", &secret("wrong"), quick()).await {
        Err(TargetFailure::AuthRejected { user, target }) => {
            assert_eq!(user, "root");
            assert_eq!(target, e.label());
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Logged in, but sudo gets the wrong password: chpasswd never runs.
    let conn = ssh::connect(&e, "admin", &secret("Admin-Pw-1"), quick())
        .await
        .unwrap();
    let r = remote::apply(
        &conn,
        AdminKind::Sudo,
        &secret("not-the-admin-pw"),
        &ResetCommand::chpasswd(),
        "app",
        &secret("Whatever-1"),
        &e.label(),
    )
    .await;
    match r {
        Err(ApplyFailure::Refused { status, detail, .. }) => {
            assert_ne!(status, 0);
            assert!(!detail.contains("not-the-admin-pw"), "{detail}");
            assert!(!detail.contains("Whatever-1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Not an admin at all: chpasswd as a plain user is refused by the target.
    let app = ssh::connect(&e, "app", &secret("App-Pw-1"), quick())
        .await
        .unwrap();
    let r = remote::apply(
        &app,
        AdminKind::Root,
        &secret("App-Pw-1"),
        &ResetCommand::chpasswd(),
        "app",
        &secret("Whatever-2"),
        &e.label(),
    )
    .await;
    assert!(matches!(r, Err(ApplyFailure::Refused { .. })), "{r:?}");
    assert_eq!(
        t.shadow_hash("app"),
        before,
        "nothing changed on the target"
    );
}

#[tokio::test]
async fn a_target_that_is_down_is_reported_as_unreachable() {
    let mut t = SshTarget::start("Root-Pw-1", &[]);
    let e = endpoint(&t, None);
    t.stop();
    match ssh::connect(&e, "root", &secret("Root-Pw-1"), quick()).await {
        Err(TargetFailure::Unreachable { target, reason }) => {
            assert_eq!(target, e.label());
            assert!(!reason.is_empty());
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_changed_host_key_is_refused_before_any_password_is_sent() {
    let mut t = SshTarget::start("Root-Pw-1", &[]);
    let first = ssh::connect(&endpoint(&t, None), "root", &secret("Root-Pw-1"), quick())
        .await
        .unwrap();
    let pin = first.host_key.clone();
    first.close().await;
    // The same pin connects again.
    let again = ssh::connect(
        &endpoint(&t, Some(pin.clone())),
        "root",
        &secret("Root-Pw-1"),
        quick(),
    )
    .await
    .unwrap();
    again.close().await;

    t.new_host_key();
    t.restart();
    let e = endpoint(&t, Some(pin.clone()));
    match ssh::connect(&e, "root", &secret("Root-Pw-1"), quick()).await {
        Err(TargetFailure::HostKeyChanged {
            expected, actual, ..
        }) => {
            assert_eq!(expected, pin);
            assert!(actual.starts_with("SHA256:") && actual != pin, "{actual}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The restarted target (its log starts afresh) saw no password at all.
    let log = t.log();
    assert!(log.contains("Server listening"), "{log}");
    assert!(!log.contains("password for root"), "{log}");
}

#[tokio::test]
async fn one_chpasswd_run_names_the_line_it_could_not_apply_and_vouches_for_no_other() {
    let t = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::new("a1", "Old-Pw-1"),
            TargetUser::new("a2", "Old-Pw-2"),
        ],
    );
    let e = endpoint(&t, None);
    let conn = ssh::connect(&e, "root", &secret("Root-Pw-1"), quick())
        .await
        .unwrap();
    let new1 = secret("Batch-New-1!");
    let new2 = secret("Batch-New-2!");
    let lines = vec![
        remote::command_input(&ResetCommand::chpasswd(), "a1", &new1).unwrap(),
        remote::command_input(&ResetCommand::chpasswd(), "ghost", &new1).unwrap(),
        remote::command_input(&ResetCommand::chpasswd(), "a2", &new2).unwrap(),
    ];
    let results = remote::apply_many(
        &conn,
        AdminKind::Root,
        &secret("Root-Pw-1"),
        &ResetCommand::chpasswd(),
        lines,
        &e.label(),
    )
    .await;
    conn.close().await;
    match &results[1] {
        Err(ApplyFailure::Refused { detail, .. }) => assert!(detail.contains("ghost"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // The run exited 1: its status proves nothing about the other lines, so each is reported
    // as possibly changed (the engine then asks the target), never as done nor as untouched.
    for r in [&results[0], &results[2]] {
        let e = r.as_ref().expect_err("not vouched for");
        assert!(e.may_have_changed(), "{e}");
        assert!(
            !e.to_string().contains("ghost"),
            "not another line's reason: {e}"
        );
    }
    // What the target says: both were applied.
    let command = ResetCommand::chpasswd();
    let (pool, batcher) = (AdminPool::new(quick()), CommandBatcher::default());
    let target = SshConnector {
        endpoint: e.clone(),
        timeouts: quick(),
        pool: &pool,
        batcher: &batcher,
        command: &command,
    };
    for (login, pw) in [("a1", &new1), ("a2", &new2)] {
        let held = connector::held(&target, login, pw, &secret("Old-Pw-1")).await;
        assert_eq!(held.unwrap(), Held::New, "{login}");
    }
}
