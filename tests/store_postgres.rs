//! What only the PostgreSQL backend does: copies between backends, signing
//! keys shared by instances, a pool that outlives dropped connections, and
//! error messages that never show the URL's password.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::postgres::{schema, url};
use stepgate::assertion::KeyRing;
use stepgate::crypto::Secrets;
use stepgate::store::*;

/// A SQLite store with some of everything, written through the traits.
async fn filled_sqlite(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir).await.unwrap();
    let totp = TotpRow {
        username: "alice".into(),
        sealed_secret: vec![9; 40],
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        created: 1,
        last_step: -1,
        name: "Phone".into(),
        last_used: None,
    };
    assert!(store.insert_totp(&totp).await.unwrap());
    assert!(store.claim_totp_step("alice", 77, 2).await.unwrap());
    for (user, id, kind) in
        [("alice", &b"cred-a"[..], "platform"), ("bob", b"cred-b", "security_key"), ("alice", b"cred-c", "security_key")]
    {
        let row = WebauthnRow {
            id: 0,
            username: user.into(),
            credential_id: id.to_vec(),
            kind: kind.into(),
            name: format!("{user}'s key"),
            credential: "{\"cred\":true}".into(),
            counter: 3,
            aaguid: None,
            discoverable: kind == "platform",
            created: 5,
            last_used: Some(6),
            possible_clone_at: None,
        };
        assert!(store.insert_webauthn(&row).await.unwrap());
    }
    // A gap in the ids, which a copy must keep.
    let first = store.webauthn_credentials("alice").await.unwrap()[0].id;
    assert!(store.delete_webauthn("alice", first).await.unwrap());
    let bobs = store.webauthn_credentials("bob").await.unwrap()[0].id;
    store.flag_possible_clone(bobs, 8).await.unwrap();
    // Two phone numbers and an address, with a gap in the ids.
    for (channel, destination) in [("phone", "+41446681867"), ("phone", "+41446681800"), ("email", "alice@example.com")] {
        let row = OobRow {
            id: 0,
            username: "alice".into(),
            channel: channel.into(),
            destination: destination.into(),
            name: "Mobile".into(),
            created: 7,
            last_used: None,
        };
        assert!(store.insert_oob(&row).await.unwrap().is_some());
        assert!(store.insert_oob(&row).await.unwrap().is_none(), "a destination is enrolled once per user");
    }
    let first_phone = store.oob_factors("alice").await.unwrap()[0].id;
    assert_eq!(store.remove_factor("alice", FactorRef::Oob(first_phone), &["phone"], true).await.unwrap(), Removal::Removed);
    store.replace_recovery_codes("alice", &[[1; 32], [2; 32], [3; 32]], 10).await.unwrap();
    assert!(store.use_recovery_code("alice", &[2; 32], 11).await.unwrap());
    store.remember_device("alice", "browser-1", 12, Some(1_000)).await.unwrap();
    store.remember_device("bob", "browser-2", 13, None).await.unwrap();
    for (at, country) in [(20, Some("CH")), (21, None), (21, Some("DE"))] {
        let row = SignInRow {
            username: "alice".into(),
            at,
            ip: "192.0.2.7".into(),
            country: country.map(str::to_string),
            latitude: Some(46.5),
            longitude: None,
            accuracy_km: Some(20),
            confidence: "medium".into(),
            signals: "[\"new_device\"]".into(),
        };
        store.record_sign_in(&row).await.unwrap();
    }
    assert!(store.save_signing_keys(None, "{\"keys\":[]}").await.unwrap());
    let token = AdminTokenRow {
        name: "helpdesk".into(),
        hash: [9; 32],
        scopes: vec!["users:read".into(), "factors:write".into()],
        groups: vec!["acme".into()],
        created: 14,
        expires: None,
        last_used: Some(15),
    };
    assert!(store.insert_admin_token(&token).await.unwrap());
    for hash in [[10; 32], [11; 32]] {
        let ticket =
            TicketRow { id: 0, username: "alice".into(), hash, created: 16, expires: 100, used_at: None, created_by: "helpdesk".into() };
        store.insert_ticket(&ticket).await.unwrap();
    }
    // A gap in the ticket ids, and a spent ticket, which a copy must keep.
    let first_ticket = store.tickets_of("alice").await.unwrap().last().unwrap().id;
    assert!(store.revoke_ticket("alice", first_ticket).await.unwrap());
    assert!(store.claim_ticket(&[11; 32], "alice", 17).await.unwrap());
    for (at, kind) in [(18, "mfa_reset"), (19, "sign_in")] {
        let event = AuditRow {
            id: 0,
            at,
            kind: kind.into(),
            username: Some("alice".into()),
            actor: "helpdesk".into(),
            ip: None,
            country: Some("CH".into()),
            app: None,
            outcome: "success".into(),
            details: "{\"factors\":2}".into(),
        };
        store.record_audit(&event).await.unwrap();
    }
    store
        .insert_session(&SessionRow {
            key: [5; 32],
            username: "alice".into(),
            factors: "[]".into(),
            created: 1,
            last_seen: 1,
            pending_totp: None,
            context: "{}".into(),
        })
        .await
        .unwrap();
    store
}

/// An event the gateway recorded by itself.
fn gateway_event() -> AuditRow {
    AuditRow {
        id: 0,
        at: 0,
        kind: "sign_in".into(),
        username: None,
        actor: "stepgate".into(),
        ip: None,
        country: None,
        app: None,
        outcome: "success".into(),
        details: "{}".into(),
    }
}

#[tokio::test]
async fn a_copy_to_postgres_keeps_every_row_and_refuses_to_overwrite_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled_sqlite(dir.path()).await;
    let schema = schema().await;
    let target = schema.store().await;

    let report = copy(&source, &target, false).await.unwrap();
    let expected = CopyReport {
        totp: 1,
        webauthn: 2,
        oob: 2,
        recovery_codes: 3,
        devices: 2,
        sign_ins: 3,
        signing_keys: true,
        admin_tokens: 1,
        tickets: 1,
        audit_events: 2,
    };
    assert_eq!(report, expected);
    let exported = source.export_snapshot().await.unwrap();
    assert_eq!(target.export_snapshot().await.unwrap(), exported, "every row reads back equal");

    // Through the traits, as the gateway will read them.
    assert_eq!(target.get_totp("alice").await.unwrap(), source.get_totp("alice").await.unwrap());
    assert_eq!(target.webauthn_credentials("alice").await.unwrap(), source.webauthn_credentials("alice").await.unwrap());
    assert_eq!(target.recovery_codes_left("alice").await.unwrap(), (2, Some(10)));
    assert!(!target.use_recovery_code("alice", &[2; 32], 30).await.unwrap(), "a spent code stays spent");
    assert!(!target.claim_totp_step("alice", 77, 30).await.unwrap(), "a spent TOTP step stays spent");
    assert_eq!(target.device_trusted_until("alice", "browser-1").await.unwrap(), Some(1_000));
    assert_eq!(target.last_sign_in("alice").await.unwrap(), source.last_sign_in("alice").await.unwrap());
    assert_eq!(target.signing_keys().await.unwrap().map(|k| k.json).as_deref(), Some("{\"keys\":[]}"));
    assert!(target.get_session(&[5; 32]).await.unwrap().is_none(), "sessions are not copied");
    assert_eq!(target.admin_token(&[9; 32]).await.unwrap(), source.admin_token(&[9; 32]).await.unwrap());
    assert!(!target.claim_ticket(&[11; 32], "alice", 30).await.unwrap(), "a spent ticket stays spent");
    let audit = AuditQuery { limit: 10, ..AuditQuery::default() };
    assert_eq!(target.audit_events(&audit).await.unwrap(), source.audit_events(&audit).await.unwrap());
    let next = AuditRow { id: 0, at: 40, ..gateway_event() };
    let new_id = target.record_audit(&next).await.unwrap();
    assert!(new_id > source.audit_events(&audit).await.unwrap()[0].id, "new events follow the copied ids");

    // New enrolments do not collide with the copied ids.
    let mut fresh = target.webauthn_credentials("bob").await.unwrap()[0].clone();
    fresh.credential_id = b"cred-new".to_vec();
    assert!(target.insert_webauthn(&fresh).await.unwrap());
    let ids: Vec<i64> = exported.webauthn.iter().map(|c| c.id).collect();
    let new_id = target.webauthn_credential(b"cred-new").await.unwrap().unwrap().id;
    assert!(ids.iter().all(|id| *id < new_id), "{new_id} after {ids:?}");
    assert_eq!(target.oob_factors("alice").await.unwrap(), source.oob_factors("alice").await.unwrap());
    let phone = OobRow { id: 0, destination: "+41791234567".into(), ..exported.oob[0].clone() };
    let new_phone = target.insert_oob(&phone).await.unwrap().unwrap();
    assert!(exported.oob.iter().all(|row| row.id < new_phone), "new phone numbers follow the copied ids");

    let refused = copy(&source, &target, false).await.expect_err("a target with data is refused");
    assert!(matches!(refused, CopyError::TargetNotEmpty), "{refused}");
    assert!(target.webauthn_credential(b"cred-new").await.unwrap().is_some(), "nothing was written");
    assert_eq!(copy(&source, &target, true).await.unwrap(), expected);
    assert_eq!(target.export_snapshot().await.unwrap(), exported, "an overwrite replaces the target's data");

    // And back, into an empty SQLite store.
    let back_dir = tempfile::tempdir().unwrap();
    let back = SqliteStore::open(back_dir.path()).await.unwrap();
    assert_eq!(copy(&target, &back, false).await.unwrap(), expected);
    assert_eq!(back.export_snapshot().await.unwrap(), exported);
}

#[tokio::test]
async fn the_store_copy_command_reads_the_url_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled_sqlite(dir.path()).await);
    let schema = schema().await;
    let target = schema.store().await;
    let url = format!("{}?options=-c%20search_path%3D{}", url(), schema.name());
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(["store", "copy", "--to-env", "STEPGATE_COPY_TARGET"])
            .arg(format!("--from=sqlite:{}", dir.path().display()))
            .args(extra)
            .env("STEPGATE_COPY_TARGET", &url)
            .output()
            .unwrap()
    };
    let output = run(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("webauthn credentials: 2") && stdout.contains("sign-ins:             3"), "{stdout}");
    assert_eq!(target.webauthn_credential(b"cred-c").await.unwrap().map(|c| c.username).as_deref(), Some("alice"));

    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(run(&["--overwrite"]).status.success());

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["store", "copy", "--from", "sqlite:/nonexistent/stepgate-data", "--to-env", "STEPGATE_COPY_TARGET"])
        .env("STEPGATE_COPY_TARGET", &url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no stepgate.db"), "a mistyped source is not an empty one");
}

#[tokio::test]
async fn instances_share_one_first_key_and_see_a_rotation() {
    let schema = schema().await;
    let (a, b) = (schema.store().await, schema.store().await);
    let secrets = Secrets::from_master(&[7; 32]);
    let (ring_a, ring_b) = tokio::join!(KeyRing::load_or_create(&a, &secrets, 100), KeyRing::load_or_create(&b, &secrets, 100));
    let (ring_a, ring_b) = (ring_a.unwrap(), ring_b.unwrap());
    assert_eq!(ring_a.jwks(100, 300), ring_b.jwks(100, 300), "two instances starting at once publish one key");
    assert_eq!(ring_a.jwks(100, 300)["keys"].as_array().unwrap().len(), 1);
    assert!(KeyRing::reload_if_changed(&b, &secrets, &ring_b).await.unwrap().is_none(), "nothing changed");

    let kid = stepgate::assertion::rotate_keys(&a, &secrets, 200, 300).await.unwrap();
    let reloaded = KeyRing::reload_if_changed(&b, &secrets, &ring_b).await.unwrap().expect("b sees a's rotation");
    assert_eq!(reloaded.signing_key().unwrap().kid, kid);
    assert_eq!(reloaded.jwks(200, 300)["keys"].as_array().unwrap().len(), 2, "the old key stays published");

    let stored = a.signing_keys().await.unwrap().unwrap().json;
    assert!(!stored.contains("PRIVATE KEY"), "the private keys are sealed");
    let wrong = KeyRing::load_or_create(&a, &Secrets::from_master(&[8; 32]), 200).await.err().expect("another master key cannot open them");
    assert!(wrong.to_string().contains("damaged"), "{wrong}");
}

#[tokio::test]
async fn concurrent_rotations_are_both_kept() {
    let schema = schema().await;
    let (a, b) = (schema.store().await, schema.store().await);
    let secrets = Secrets::from_master(&[7; 32]);
    KeyRing::load_or_create(&a, &secrets, 100).await.unwrap();
    let (first, second) =
        tokio::join!(stepgate::assertion::rotate_keys(&a, &secrets, 200, 300), stepgate::assertion::rotate_keys(&b, &secrets, 200, 300));
    let (first, second) = (first.unwrap(), second.unwrap());
    let ring = KeyRing::load_or_create(&a, &secrets, 200).await.unwrap();
    let kids: Vec<String> =
        ring.jwks(200, 300)["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(kids.contains(&first) && kids.contains(&second), "no rotation was lost: {kids:?}");
}

#[tokio::test]
async fn the_pool_replaces_connections_the_server_dropped() {
    let schema = schema().await;
    let app = format!("stepgate_recovery_{}", uuid::Uuid::new_v4().simple());
    let mut options = schema.options.clone();
    options.url = format!("{}?application_name={app}", url());
    let store = PostgresStore::connect(&options).await.unwrap();
    store.ping().await.unwrap();

    // What a PostgreSQL restart does to the pool's idle connections.
    let admin = sqlx::PgPool::connect(&url()).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&app)
        .fetch_all(&admin)
        .await
        .unwrap();
    assert!(!killed.is_empty(), "the store had a connection to drop");
    tokio::time::sleep(Duration::from_millis(100)).await;

    store.ping().await.expect("the pool recovers without a restart");
    assert!(store.get_totp("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn errors_never_show_the_password() {
    let password = "pw-Sup3r%2Fsecret";
    let decoded = "pw-Sup3r/secret";
    let host = url::Url::parse(&url()).unwrap();
    let (address, port) = (host.host_str().unwrap().to_string(), host.port().unwrap_or(5432));
    let urls = [
        format!("postgres://postgres:{password}@{address}:{port}/stepgate_no_such_database"),
        format!("postgres://postgres:{password}@127.0.0.1:1/test"),
        format!("postgres://postgres:{password}@{address}:notaport/test"),
        format!("postgres://postgres:{password}@{address}:{port}/test?sslmode=nonsense"),
    ];
    for url in urls {
        let options = PostgresOptions { url: url.clone(), pool_size: 1, connect_timeout: Duration::from_secs(3), schema: None };
        let error = PostgresStore::connect(&options).await.err().expect("cannot connect");
        for shown in [error.to_string(), format!("{error:?}"), format!("{options:?}")] {
            assert!(!shown.contains(password) && !shown.contains(decoded) && !shown.contains("Sup3r"), "{shown}");
        }
    }
}

#[tokio::test]
async fn a_schema_name_is_checked() {
    let mut options = schema().await.options.clone();
    options.schema = Some("public; DROP TABLE x".into());
    let error = PostgresStore::connect(&options).await.err().expect("refused");
    assert!(matches!(error, StoreError::Config(_)), "{error}");
}

#[tokio::test]
async fn open_picks_the_backend() {
    let schema = schema().await;
    let store: Arc<dyn Store> = open(&StoreChoice::Postgres(schema.options.clone())).await.unwrap();
    assert!(store.signing_keys().await.unwrap().is_none());
    migrate(&StoreChoice::Postgres(schema.options.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let choice = StoreChoice::parse_location(&format!("sqlite:{}", dir.path().display())).unwrap();
    open(&choice).await.unwrap();
    assert!(dir.path().join("stepgate.db").exists());
}
