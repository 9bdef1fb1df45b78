//! The same store tests on SQLite and on PostgreSQL (the machine's server, one fresh database
//! per test; mandatory when CI is set).

use lockstep_server::audit::{self, Actor, NewEvent, Outcome};
use lockstep_server::inventory::accounts::{self, NewAccount, RetrieveRequest};
use lockstep_server::inventory::resources::{self, NewResource, ResourcePatch};
use lockstep_server::store::{PageRequest, Store};
use lockstep_server::vault::{MasterKey, Secret, Vault};
use lockstep_server::{Error, identity, inventory, serve};
use lockstep_testkit::PostgresDatabase;
use sqlx::{AnyConnection, Connection, Executor};

/// A store on one backend, and how to clean it up.
struct TestDb {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped with this (after the store) whatever the test's outcome.
    _postgres: Option<PostgresDatabase>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        TestDb {
            store: serve::open_store(&url, std::sync::Arc::new(vault()))
                .await
                .unwrap(),
            url,
            _dir: Some(dir),
            _postgres: None,
        }
    }

    async fn postgres() -> Option<TestDb> {
        sqlx::any::install_default_drivers();
        let db = lockstep_testkit::postgres_database().await?;
        let url = db.url().to_string();
        let store = serve::open_store(&url, std::sync::Arc::new(vault()))
            .await
            .unwrap();
        Some(TestDb {
            store,
            url,
            _dir: None,
            _postgres: Some(db),
        })
    }

    async fn cleanup(self) {
        self.store.close().await;
    }
}

/// Runs one async test body against SQLite and PostgreSQL.
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$body(&db).await;
                db.cleanup().await;
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::TestDb::postgres().await {
                    super::$body(&db).await;
                    db.cleanup().await;
                }
            }
        }
    };
}

fn actor() -> Actor {
    Actor::user("tester", Some("127.0.0.1".into()))
}

fn vault() -> Vault {
    Vault::new(MasterKey::from_bytes([42u8; 32]))
}

/// The registry (and its ledger, which pins identities) over `store`.
fn registry(store: &Store) -> lockstep_server::registry::Registry {
    let runtime = lockstep_runtime::Runtime::new(None).unwrap();
    lockstep_server::registry::Registry::new(
        store.clone(),
        std::sync::Arc::new(vault()),
        std::sync::Arc::new(runtime),
        1 << 20,
    )
}

fn page(after: Option<String>, limit: i64) -> PageRequest {
    PageRequest { after, limit }
}

fn new_resource(name: &str, ty: &str) -> NewResource {
    NewResource {
        name: name.into(),
        resource_type: ty.into(),
        ip_address: Some("10.0.0.1".into()),
        url: None,
        domain_name: None,
        ssh_port: Some(22),
        description: None,
        location: None,
        department: None,
        custom_fields: [("Owner".to_string(), "ops".to_string())].into(),
    }
}

async fn users_tokens_and_roles(db: &TestDb) {
    let s = &db.store;
    let a = actor();
    let user = identity::create_user(
        s,
        None,
        &a,
        identity::NewUser {
            name: "alice".into(),
            role: "auditor".into(),
            email: Some("alice@example.com".into()),
        },
    )
    .await
    .unwrap()
    .user;
    let dup = identity::create_user(
        s,
        None,
        &a,
        identity::NewUser {
            name: "alice".into(),
            role: "admin".into(),
            email: None,
        },
    )
    .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    let bad = identity::create_user(
        s,
        None,
        &a,
        identity::NewUser {
            name: "bad name".into(),
            role: "nope".into(),
            email: Some("not an address".into()),
        },
    )
    .await;
    match bad {
        Err(Error::Validation(p)) => assert_eq!(p.len(), 3, "every field reported: {p:?}"),
        other => panic!("{other:?}"),
    }

    let stored = identity::get_user(s, &user.id).await.unwrap();
    assert_eq!(stored.email.as_deref(), Some("alice@example.com"));

    let issued = identity::issue_token(s, &a, &user.id, identity::NewToken::default())
        .await
        .unwrap();
    let registry = registry(s);
    let principal = identity::authenticate(s, &registry, &issued.token)
        .await
        .unwrap();
    assert_eq!(principal.user_name, "alice");
    assert!(principal.require(identity::Privilege::ReadAudit).is_ok());
    assert!(matches!(
        principal.require(identity::Privilege::RetrievePasswords),
        Err(Error::Forbidden(_))
    ));

    identity::revoke_token(s, &principal, &a, &issued.info.id)
        .await
        .unwrap();
    let err = identity::authenticate(s, &registry, &issued.token)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("revoked"), "{err}");

    // An expired token is refused (written straight to the store with a past expiry, then
    // sealed as the server seals every identity change).
    let mut change = identity::seal::IdentityChange::begin(s).await.unwrap();
    change.check(&user.id).await.unwrap().expect("alice");
    lockstep_server::store::tokens::insert(
        change.tx().conn(),
        &lockstep_server::store::tokens::TokenRow {
            id: "tok_old".into(),
            user_id: user.id.clone(),
            name: "old".into(),
            token_sha256: identity::token::hash("lst_expired"),
            created_at: "2020-01-01T00:00:00.000000Z".into(),
            expires_at: "2020-02-01T00:00:00.000000Z".into(),
            revoked_at: None,
        },
    )
    .await
    .unwrap();
    change.commit(&[&user.id], "test").await.unwrap();
    let err = identity::authenticate(s, &registry, "lst_expired")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired"), "{err}");

    // alice (an auditor) may make a role of what she holds, nothing more.
    let role = identity::create_role(
        s,
        &principal,
        &a,
        identity::NewRole {
            name: "readers".into(),
            description: String::new(),
            privileges: vec![identity::Privilege::ReadAudit],
        },
    )
    .await
    .unwrap();
    let wider = identity::create_role(
        s,
        &principal,
        &a,
        identity::NewRole {
            name: "retrievers".into(),
            description: String::new(),
            privileges: vec![identity::Privilege::RetrievePasswords],
        },
    )
    .await;
    assert!(matches!(wider, Err(Error::NotAllowed(_))), "{wider:?}");
    assert!(!role.builtin);
    assert_eq!(identity::list_roles(s).await.unwrap().len(), 6);
    assert!(matches!(
        identity::delete_role(s, &a, "admin").await,
        Err(Error::Conflict(_))
    ));
    identity::delete_role(s, &a, "readers").await.unwrap();
}
on_both_databases!(users_tokens_and_roles_work, users_tokens_and_roles);

async fn inventory_crud_and_pagination(db: &TestDb) {
    let s = &db.store;
    let a = actor();
    assert!(inventory::resource_types::list(s).await.unwrap().len() >= 17);
    let mut ids = Vec::new();
    for i in 0..5 {
        let ty = if i % 2 == 0 { "Linux" } else { "Generic" };
        ids.push(
            resources::create(s, &a, new_resource(&format!("host{i}"), ty))
                .await
                .unwrap()
                .id,
        );
    }
    let p1 = resources::list(s, None, &page(None, 2)).await.unwrap();
    assert_eq!(
        p1.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids[..2]
    );
    let p2 = resources::list(s, None, &page(p1.next_after.clone(), 2))
        .await
        .unwrap();
    let p3 = resources::list(s, None, &page(p2.next_after.clone(), 2))
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next_after.is_none());
    let linux = resources::list(s, Some("Linux"), &page(None, 100))
        .await
        .unwrap();
    assert_eq!(linux.items.len(), 3);

    let patched = resources::update(
        s,
        &a,
        &ids[0],
        ResourcePatch {
            location: Some(Some("DC1".into())),
            ip_address: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(patched.location.as_deref(), Some("DC1"));
    assert_eq!(patched.ip_address, None);
    assert_eq!(patched.custom_fields["Owner"], "ops");
    assert_eq!(patched.properties()["LOCATION"], "DC1");
    let clash = resources::update(
        s,
        &a,
        &ids[0],
        ResourcePatch {
            name: Some("host1".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");

    let v = vault();
    let acc = accounts::create(
        s,
        &v,
        &a,
        &ids[0],
        NewAccount {
            login_name: "root".into(),
            password: Secret::new("Store-Sentinel-1".into()),
            description: None,
            domain_name: None,
            custom_fields: Default::default(),
        },
    )
    .await
    .unwrap();
    let listed = accounts::list_for_resource(s, &ids[0], &page(None, 10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let in_use = resources::delete(s, &a, &ids[0]).await;
    assert!(
        matches!(in_use, Err(Error::Conflict(_))),
        "a resource with accounts is not deleted: {in_use:?}"
    );
    accounts::delete(s, &a, &acc.id).await.unwrap();
    resources::delete(s, &a, &ids[0]).await.unwrap();
    assert!(matches!(
        resources::get(s, &ids[0]).await,
        Err(Error::NotFound { .. })
    ));
}
on_both_databases!(
    inventory_crud_and_pagination_work,
    inventory_crud_and_pagination
);

/// A reset step is written only by the claim that holds the item: a worker whose lease ran
/// out, and whose item another worker claimed, writes nothing (it used to overwrite the new
/// claim's journal, which could lose a password).
async fn reset_steps_are_fenced_by_their_claim(db: &TestDb) {
    use lockstep_server::states::{ItemState, JobStatus};
    use lockstep_server::store::resets::{self, ItemRow, JobRow};
    let s = &db.store;
    let a = actor();
    let rid = resources::create(s, &a, new_resource("fenced", "Linux"))
        .await
        .unwrap()
        .id;
    let account = accounts::create(
        s,
        &vault(),
        &a,
        &rid,
        NewAccount {
            login_name: "app".into(),
            password: Secret::new("App-Pw-1".into()),
            description: None,
            domain_name: None,
            custom_fields: Default::default(),
        },
    )
    .await
    .unwrap();
    let t = |second: u32| format!("2026-01-01T00:00:{second:02}.000000Z");
    let mut tx = s.begin_write().await.unwrap();
    let job = JobRow {
        id: "job_fenced".into(),
        kind: "single".into(),
        trigger: "manual".into(),
        status: JobStatus::Running.as_str().into(),
        requested_by: "tester".into(),
        reason: "fencing".into(),
        apply_remote: 1,
        idempotency_key: None,
        created_at: t(0),
        finished_at: None,
        notify: None,
    };
    resets::insert_job(tx.conn(), &job).await.unwrap();
    let item = ItemRow {
        id: "itm_fenced".into(),
        job_id: job.id.clone(),
        account_id: account.id.clone(),
        state: ItemState::Planned.as_str().into(),
        attempts: 0,
        detail: None,
        listeners: "[]".into(),
        lease_owner: None,
        lease_until: None,
        created_at: t(0),
        updated_at: t(0),
        claims: 0,
        steps: String::new(),
    };
    resets::insert_items(tx.conn(), &[(item.clone(), None)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let backend = s.backend();
    let claim = |owner: &'static str, now: String, until: String| async move {
        let mut tx = s.begin_write().await.unwrap();
        let claimed = resets::claim(tx.conn(), backend, owner, &now, &until, false)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        claimed
    };
    // Worker A claims it until second 5; at second 10 its lease has run out and B claims it.
    let by_a = claim("srv_a/lease_1", t(1), t(5)).await.expect("A claims");
    assert_eq!(by_a.lease_owner.as_deref(), Some("srv_a/lease_1"));
    let by_b = claim("srv_a/lease_2", t(10), t(40))
        .await
        .expect("B claims");
    assert_eq!(by_b.lease_owner.as_deref(), Some("srv_a/lease_2"));
    let step = |lease: &'static str, to: ItemState| async move {
        let mut tx = s.begin_write().await.unwrap();
        let written = resets::set_state(
            tx.conn(),
            "itm_fenced",
            lease,
            to.as_str(),
            None,
            "[]",
            1,
            &t(11),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        written
    };
    assert!(
        !step("srv_a/lease_1", ItemState::Applied).await,
        "A's step is refused"
    );
    let now = resets::item(s.pool(), "itm_fenced").await.unwrap().unwrap();
    assert_eq!(now.state, ItemState::Planned.as_str(), "A wrote nothing");
    assert!(
        step("srv_a/lease_2", ItemState::PreListeners).await,
        "B holds it"
    );
    let now = resets::item(s.pool(), "itm_fenced").await.unwrap().unwrap();
    assert_eq!(now.state, ItemState::PreListeners.as_str());
    // A write that is not a step checks the claim the same way.
    let holds = |lease: &'static str| async move {
        let mut tx = s.begin_write().await.unwrap();
        let held = resets::holds(tx.conn(), "itm_fenced", lease).await.unwrap();
        tx.commit().await.unwrap();
        held
    };
    assert!(!holds("srv_a/lease_1").await, "A's claim is gone");
    assert!(holds("srv_a/lease_2").await, "B's claim holds");
    // Two claims; only the holder's step is in the trail, with its node.
    assert_eq!(now.claims, 2);
    assert_eq!(now.steps, format!("{} srv_a pre-listeners\n", t(11)));
}

on_both_databases!(reset_fencing, reset_steps_are_fenced_by_their_claim);

async fn duties_pass_on_only_when_their_lease_ran_out(db: &TestDb) {
    use lockstep_server::store::cluster::{duty_holders, hold_duty, release_duty};
    let s = &db.store;
    let t = |second: u32| format!("2026-01-01T00:00:{second:02}.000000Z");
    let hold = |node: &'static str, now: String, until: String| async move {
        let mut tx = s.begin_write().await.unwrap();
        let fence = hold_duty(tx.conn(), "scheduler", node, &now, &until)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        fence
    };
    assert_eq!(
        hold("srv_a", t(0), t(20)).await,
        Some(1),
        "the first takes it"
    );
    assert_eq!(hold("srv_b", t(5), t(25)).await, None, "A's lease is live");
    assert_eq!(hold("srv_a", t(10), t(30)).await, Some(1), "A renews it");
    assert_eq!(hold("srv_b", t(29), t(49)).await, None, "still A's");
    // A went silent: past its lease B takes it, with a higher fence, and A cannot renew.
    assert_eq!(hold("srv_b", t(31), t(51)).await, Some(2));
    assert_eq!(hold("srv_a", t(32), t(52)).await, None, "A lost it");
    assert_eq!(
        duty_holders(s.pool(), &t(33)).await.unwrap(),
        vec![("scheduler".to_string(), "srv_b".to_string())]
    );
    // A graceful stop lets it go at once.
    let mut tx = s.begin_write().await.unwrap();
    release_duty(tx.conn(), "scheduler", "srv_b").await.unwrap();
    tx.commit().await.unwrap();
    assert!(duty_holders(s.pool(), &t(34)).await.unwrap().is_empty());
    assert_eq!(hold("srv_a", t(35), t(55)).await, Some(3));
}

on_both_databases!(duty_leases, duties_pass_on_only_when_their_lease_ran_out);

/// A scheduled run makes one job however often it is tried. The job and the schedule's move are
/// one transaction; a schedule that still shows a run whose job exists (put back, as a restore
/// would) is only moved on: the idempotency key finds the job made.
async fn a_scheduled_run_makes_one_job(db: &TestDb) {
    use lockstep_server::reset::scheduler::{
        RotationSchedule, create_schedule, list_schedules, run_due_schedules,
    };
    use lockstep_server::store::rotation_schedules::advance;
    let s = &db.store;
    let a = actor();
    let v = vault();
    let rid = resources::create(s, &a, new_resource("sched0", "Linux"))
        .await
        .unwrap()
        .id;
    accounts::create(
        s,
        &v,
        &a,
        &rid,
        NewAccount {
            login_name: "app".into(),
            password: Secret::new("App-Pw-1".into()),
            description: None,
            domain_name: None,
            custom_fields: Default::default(),
        },
    )
    .await
    .unwrap();
    let due_at = "2026-01-01T00:00:00.000000Z".to_string();
    create_schedule(
        s,
        &a,
        "tester",
        RotationSchedule {
            name: "fleet".into(),
            resource_type: None,
            resource_ids: Some(vec![rid.clone()]),
            every_hours: 1,
            next_run_at: Some(due_at.clone()),
            notify: Vec::new(),
        },
    )
    .await
    .unwrap();
    let next_run = || async {
        list_schedules(s).await.unwrap()[0]
            .next_run_at
            .clone()
            .unwrap()
    };
    let jobs = run_due_schedules(s, &v).await.unwrap();
    assert_eq!(jobs.len(), 1, "the due run starts its job");
    let moved_to = next_run().await;
    assert!(
        moved_to > lockstep_server::time::now(),
        "moved on past now: {moved_to}"
    );
    // Nothing is due now: trying again starts nothing.
    assert!(run_due_schedules(s, &v).await.unwrap().is_empty());
    // The run's job exists, the schedule shows the run again.
    let mut tx = s.begin_write().await.unwrap();
    assert!(
        advance(tx.conn(), "fleet", &moved_to, &due_at)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert!(
        run_due_schedules(s, &v).await.unwrap().is_empty(),
        "the run's job exists: no second one"
    );
    assert_eq!(next_run().await, moved_to, "moved on again, once");
}

on_both_databases!(scheduled_runs_start_once, a_scheduled_run_makes_one_job);

async fn passwords_sealed_at_rest(db: &TestDb) {
    let s = &db.store;
    let a = actor();
    let v = vault();
    let rid = resources::create(s, &a, new_resource("vault-host", "Linux"))
        .await
        .unwrap()
        .id;
    let sentinel = "Sealed-Sentinel-7c1e";
    let acc = accounts::create(
        s,
        &v,
        &a,
        &rid,
        NewAccount {
            login_name: "admin".into(),
            password: Secret::new(sentinel.into()),
            description: None,
            domain_name: None,
            custom_fields: Default::default(),
        },
    )
    .await
    .unwrap();

    // The database alone reveals no password.
    let mut conn = AnyConnection::connect(&db.url).await.unwrap();
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT password_ciphertext FROM accounts WHERE id = $1")
            .bind(&acc.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        !sealed
            .windows(sentinel.len())
            .any(|w| w == sentinel.as_bytes())
    );
    let key_id: String = sqlx::query_scalar("SELECT password_key_id FROM accounts WHERE id = $1")
        .bind(&acc.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(key_id, v.current_key_id());
    let audit_text: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_events")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(audit_text.iter().all(|d| !d.contains(sentinel)));

    // Retrieval needs a reason, returns the password and audits the reason.
    let err = accounts::retrieve_password(
        s,
        &v,
        &a,
        &acc.id,
        None,
        RetrieveRequest { reason: " ".into() },
    )
    .await;
    assert!(matches!(err, Err(Error::Validation(_))));
    let got = accounts::retrieve_password(
        s,
        &v,
        &a,
        &acc.id,
        None,
        RetrieveRequest {
            reason: "db migration".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(got.password, sentinel);
    let wrong = Vault::new(MasterKey::from_bytes([1u8; 32]));
    let err = accounts::retrieve_password(
        s,
        &wrong,
        &a,
        &acc.id,
        None,
        RetrieveRequest {
            reason: "wrong key".into(),
        },
    )
    .await;
    assert!(matches!(err, Err(Error::Crypto(_))), "{err:?}");
    conn.close().await.unwrap();
}
on_both_databases!(passwords_are_sealed_at_rest, passwords_sealed_at_rest);

async fn audit_chain(db: &TestDb) {
    let s = &db.store;
    let a = actor();
    for i in 0..5 {
        audit::record(
            s,
            NewEvent {
                actor: &a,
                action: "test.event",
                target: &format!("t{i}"),
                outcome: Outcome::Success,
                detail: serde_json::json!({ "i": i, "nested": { "b": 1, "a": [1, 2] } }),
            },
        )
        .await
        .unwrap();
    }
    // Seeding wrote no events; the five above are 1..=5.
    assert_eq!(
        audit::verify(s, &vault(), &[])
            .await
            .unwrap()
            .map(|r| r.events),
        Ok(5)
    );

    let filtered = lockstep_server::store::audit::list(
        s.pool(),
        &lockstep_server::store::audit::AuditFilter {
            target: Some("t3".into()),
            ..Default::default()
        },
        0,
        10,
    )
    .await
    .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].seq, 4);

    // Concurrent appends keep one unbroken chain.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let a = Actor::user("racer", None);
            audit::record(
                &s,
                NewEvent {
                    actor: &a,
                    action: "race",
                    target: &i.to_string(),
                    outcome: Outcome::Success,
                    detail: serde_json::Value::Null,
                },
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        audit::verify(s, &vault(), &[])
            .await
            .unwrap()
            .map(|r| r.events),
        Ok(25)
    );

    let mut conn = AnyConnection::connect(&db.url).await.unwrap();
    conn.execute("UPDATE audit_events SET outcome = 'denied' WHERE seq = 4")
        .await
        .unwrap();
    let broken = audit::verify(s, &vault(), &[]).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 4);
    assert!(broken.problem.contains("edited"), "{broken}");
    conn.close().await.unwrap();
}
on_both_databases!(audit_chain_is_verified, audit_chain);

/// Events written before the chain was keyed (SHA-256 only) are sealed by one keyed event when
/// the store is next opened with a master key, and keep verifying.
async fn unkeyed_events_are_sealed(db: &TestDb) {
    use lockstep_server::store::audit::{AuditRow, insert};
    let mut prev = audit::GENESIS_HASH.to_string();
    for seq in 1..=3 {
        let mut row = AuditRow {
            seq,
            id: format!("evt_old{seq}"),
            at: "2026-01-01T00:00:00.000000Z".into(),
            actor: "user:old".into(),
            action: "resource.create".into(),
            target: format!("r{seq}"),
            outcome: "success".into(),
            source_ip: None,
            detail: "{}".into(),
            prev_hash: prev.clone(),
            hash: String::new(),
            chain_version: audit::UNKEYED,
            key_id: None,
        };
        row.hash = audit::unkeyed_hash(&row).unwrap();
        prev = row.hash.clone();
        let mut tx = db.store.begin_write().await.unwrap();
        insert(tx.conn(), &row).await.unwrap();
        tx.commit().await.unwrap();
    }
    let store = serve::open_store(&db.url, std::sync::Arc::new(vault()))
        .await
        .unwrap();
    let report = audit::verify(&store, &vault(), &[]).await.unwrap().unwrap();
    assert_eq!((report.events, report.unkeyed), (4, 3));
    let seal = lockstep_server::store::audit::scan(store.pool(), 3, 1, true)
        .await
        .unwrap();
    assert_eq!(seal[0].action, "audit.chain.keyed");
    assert_eq!(seal[0].prev_hash, prev);
    store.close().await;
}
on_both_databases!(unkeyed_events_are_sealed_at_open, unkeyed_events_are_sealed);

/// A write transaction that reads first and writes later must not fail because another
/// connection (a lease renewal, or another `lockstep` process on the same file) wrote in
/// between. SQLite gives a deferred transaction "database is locked" at once in that case;
/// write transactions take the lock at BEGIN, so the other writer waits instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_transaction_survives_a_writer_outside_it() {
    let db = TestDb::sqlite().await;
    sqlx::query("CREATE TABLE outside_writer (x BIGINT)")
        .execute(db.store.pool())
        .await
        .unwrap();
    let mut tx = db.store.begin_write().await.unwrap();
    sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    // Another process on the same file, writing without the server's in-process lock.
    let url = db.url.clone();
    let outside = tokio::spawn(async move {
        let mut other = AnyConnection::connect(&url).await.unwrap();
        other.execute("PRAGMA busy_timeout = 10000").await.unwrap();
        other
            .execute("INSERT INTO outside_writer (x) VALUES (1)")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    audit::append(
        &mut tx,
        NewEvent {
            actor: &actor(),
            action: "test.write",
            target: "t",
            outcome: Outcome::Success,
            detail: serde_json::json!({}),
        },
    )
    .await
    .expect("the transaction writes after the other writer");
    tx.commit().await.unwrap();
    outside
        .await
        .unwrap()
        .expect("the other writer waited, then wrote");
    db.cleanup().await;
}

/// Passwords resets kept before they were bound to their account are re-sealed once for the
/// account their row names; afterwards a row re-pointed at another account does not open for
/// it, and is not re-sealed for it either.
async fn kept_passwords_bound_to_their_account(db: &TestDb) {
    use lockstep_server::reset::sealed_binding::bind_to_accounts;
    use lockstep_server::states::{ItemState, JobStatus};
    use lockstep_server::store::resets::{self, ItemRow, JobRow};
    use lockstep_server::vault::{reset_given_aad, reset_pending_aad};
    let s = &db.store;
    let v = vault();
    let a = actor();
    let rid = resources::create(s, &a, new_resource("binding", "Linux"))
        .await
        .unwrap()
        .id;
    let account = |login: &str| NewAccount {
        login_name: login.into(),
        password: Secret::new("Start-Pw-1".into()),
        description: None,
        domain_name: None,
        custom_fields: Default::default(),
    };
    let alice = accounts::create(s, &v, &a, &rid, account("alice"))
        .await
        .unwrap()
        .id;
    let bob = accounts::create(s, &v, &a, &rid, account("bob"))
        .await
        .unwrap()
        .id;
    let now = lockstep_server::time::now();
    let legacy = |which: &str, pw: &str| {
        v.seal_secret(
            &Secret::new(pw.into()),
            &format!("reset-item:itm_bound:{which}"),
        )
        .unwrap()
    };
    let mut tx = s.begin_write().await.unwrap();
    let job = JobRow {
        id: "job_bound".into(),
        kind: "single".into(),
        trigger: "manual".into(),
        status: JobStatus::Finished.as_str().into(),
        requested_by: "tester".into(),
        reason: "binding".into(),
        apply_remote: 1,
        idempotency_key: None,
        created_at: now.clone(),
        finished_at: Some(now.clone()),
        notify: None,
    };
    resets::insert_job(tx.conn(), &job).await.unwrap();
    let item = ItemRow {
        id: "itm_bound".into(),
        job_id: job.id.clone(),
        account_id: alice.clone(),
        state: ItemState::OutOfSync.as_str().into(),
        attempts: 1,
        detail: None,
        listeners: "[]".into(),
        lease_owner: None,
        lease_until: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        claims: 0,
        steps: String::new(),
    };
    let given = legacy("given", "Given-Pw-1");
    resets::insert_items(tx.conn(), &[(item, Some(given))])
        .await
        .unwrap();
    resets::set_pending(
        tx.conn(),
        "itm_bound",
        Some(&legacy("pending", "Pending-Pw-1")),
    )
    .await
    .unwrap();
    resets::keep_password(
        tx.conn(),
        "itm_bound",
        &alice,
        &legacy("pending", "Kept-Pw-1"),
        &now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(bind_to_accounts(s, &v).await.unwrap(), 3);
    // Once: an old-style ciphertext copied in afterwards (from a backup) is never opened.
    let mut tx = s.begin_write().await.unwrap();
    resets::keep_password(
        tx.conn(),
        "itm_bound",
        &alice,
        &legacy("pending", "From-A-Backup-1"),
        &now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(bind_to_accounts(s, &v).await.unwrap(), 0, "once");
    // An edited event does not say it never ran: still nothing is opened the old way.
    let mut writer = AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE audit_events SET detail = $1 WHERE action = $2")
        .bind(r#"{"bound":0}"#)
        .bind(lockstep_server::reset::sealed_binding::BOUND_ACTION)
        .execute(&mut writer)
        .await
        .unwrap();
    assert_eq!(
        bind_to_accounts(s, &v).await.unwrap(),
        0,
        "not on a forged word"
    );
    let pending = resets::pending(s.pool(), "itm_bound")
        .await
        .unwrap()
        .unwrap();
    let open = |sealed: &lockstep_server::vault::Sealed, aad: String| {
        v.open_secret(sealed, &aad).map(|p| p.expose().to_string())
    };
    assert_eq!(
        open(&pending, reset_pending_aad("itm_bound", &alice)).unwrap(),
        "Pending-Pw-1"
    );
    assert!(open(&pending, "reset-item:itm_bound:pending".into()).is_err());
    let given = resets::given(s.pool(), "itm_bound").await.unwrap().unwrap();
    assert_eq!(
        open(&given, reset_given_aad("itm_bound", &alice)).unwrap(),
        "Given-Pw-1"
    );
    let kept = resets::kept_passwords(s.pool(), &alice, "", 8)
        .await
        .unwrap();
    assert_eq!(
        kept.len(),
        3,
        "two kept rows and the out-of-sync item's pending"
    );
    let opened = kept
        .iter()
        .filter(|k| open(&k.sealed, reset_pending_aad("itm_bound", &alice)).is_ok())
        .count();
    assert_eq!(opened, 2, "all but the one copied in after the upgrade");

    // A database writer re-points the item and its kept row at bob: listed for bob, opened
    // for nobody but alice, and never re-sealed for bob.
    let mut conn = AnyConnection::connect(&db.url).await.unwrap();
    for sql in [
        "UPDATE reset_items SET account_id = $1 WHERE account_id = $2",
        "UPDATE reset_kept_passwords SET account_id = $1 WHERE account_id = $2",
    ] {
        sqlx::query(sql)
            .bind(&bob)
            .bind(&alice)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let moved = resets::kept_passwords(s.pool(), &bob, "", 8).await.unwrap();
    assert_eq!(moved.len(), 3);
    for k in &moved {
        assert!(open(&k.sealed, reset_pending_aad(&k.item_id, &bob)).is_err());
    }
    assert_eq!(bind_to_accounts(s, &v).await.unwrap(), 0);
}

on_both_databases!(
    kept_passwords_are_bound_to_their_account,
    kept_passwords_bound_to_their_account
);
