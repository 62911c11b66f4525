//! The store's behaviour, the same on every backend: each test below runs
//! once on SQLite and once on PostgreSQL (see `common::postgres` for the
//! server it needs).

mod common;

use std::sync::Arc;

use common::postgres::{schema, TestSchema};
use stepgate::store::*;

/// A store and what keeps its data alive (a directory, a schema); the
/// store is dropped first.
struct Backend {
    store: Arc<dyn Store>,
    _data: Data,
}

enum Data {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema(#[allow(dead_code)] TestSchema),
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    Backend { store: Arc::new(store), _data: Data::Dir(dir) }
}

async fn postgres() -> Backend {
    let schema = schema().await;
    let store = schema.store().await;
    Backend { store: Arc::new(store), _data: Data::Schema(schema) }
}

/// Each named behaviour as a test on each backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::sqlite().await).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::postgres().await).await
                }
            )*
        }
    };
}

on_every_backend!(
    sessions_round_trip_and_expire,
    a_deleted_session_is_neither_changed_nor_renewed,
    a_totp_step_is_claimed_once,
    concurrent_claims_of_one_totp_step_have_one_winner,
    devices_and_sign_in_history,
    webauthn_credentials_are_unique_and_claimed_forward,
    recovery_codes_are_spent_once,
    the_last_factor_is_kept_or_takes_the_recovery_codes,
    concurrent_removals_leave_a_factor,
    signing_keys_are_swapped_only_from_the_expected_version,
    an_mfa_reset_removes_everything_of_one_user,
    admin_tokens_are_found_by_hash_and_named_once,
    audit_events_are_filtered_and_paged_newest_first,
    a_ticket_is_spent_once_by_its_user_before_it_expires,
);

fn session(key: u8) -> SessionRow {
    SessionRow {
        key: [key; 32],
        username: "alice".into(),
        factors: "[]".into(),
        created: 100,
        last_seen: 100,
        pending_totp: None,
        context: "{}".into(),
    }
}

fn totp(username: &str) -> TotpRow {
    TotpRow {
        username: username.into(),
        sealed_secret: vec![1, 2, 3],
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        created: 0,
        last_step: -1,
        name: "Phone".into(),
        last_used: None,
    }
}

fn webauthn(username: &str, credential_id: &[u8], kind: &str) -> WebauthnRow {
    WebauthnRow {
        id: 0,
        username: username.into(),
        credential_id: credential_id.to_vec(),
        kind: kind.into(),
        name: "Key".into(),
        credential: "{}".into(),
        counter: 0,
        aaguid: Some("aaguid".into()),
        discoverable: true,
        created: 10,
        last_used: None,
        possible_clone_at: None,
    }
}

fn sign_in(at: i64, country: &str) -> SignInRow {
    SignInRow {
        username: "alice".into(),
        at,
        ip: "192.0.2.1".into(),
        country: Some(country.into()),
        latitude: Some(47.0),
        longitude: Some(8.0),
        accuracy_km: Some(50),
        confidence: "high".into(),
        signals: "[]".into(),
    }
}

async fn sessions_round_trip_and_expire(b: Backend) {
    let store = b.store;
    store.insert_session(&session(1)).await.unwrap();
    store.touch_session(&[1; 32], 150).await.unwrap();
    store.touch_session(&[1; 32], 120).await.unwrap();
    let got = store.get_session(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(got.last_seen, 150, "a touch never moves last_seen back");
    assert_eq!(store.sessions_of("alice").await.unwrap(), vec![got]);
    assert_eq!(store.delete_expired_sessions(151, 0).await.unwrap(), 1);
    assert!(store.get_session(&[1; 32]).await.unwrap().is_none());
}

async fn a_deleted_session_is_neither_changed_nor_renewed(b: Backend) {
    let store = b.store;
    store.insert_session(&session(1)).await.unwrap();
    let changed = store.update_session(&[1; 32], SessionChange::Context("{\"country\":\"CH\"}")).await.unwrap();
    assert_eq!(changed.unwrap().context, "{\"country\":\"CH\"}");
    let pending = store.update_session(&[1; 32], SessionChange::PendingTotp(Some(b"sealed"))).await.unwrap();
    assert_eq!(pending.unwrap().pending_totp.as_deref(), Some(&b"sealed"[..]));
    assert!(store.renew_session(&[1; 32], &session(2)).await.unwrap());
    assert!(store.get_session(&[1; 32]).await.unwrap().is_none(), "the old key is gone");
    store.delete_session(&[2; 32]).await.unwrap();
    assert!(store.update_session(&[2; 32], SessionChange::Factors("[]")).await.unwrap().is_none());
    assert!(!store.renew_session(&[2; 32], &session(3)).await.unwrap());
    assert!(store.get_session(&[2; 32]).await.unwrap().is_none(), "a write does not bring it back");
    assert!(store.get_session(&[3; 32]).await.unwrap().is_none(), "nor does a renewal");
}

async fn a_totp_step_is_claimed_once(b: Backend) {
    let store = b.store;
    assert!(store.insert_totp(&totp("alice")).await.unwrap());
    assert!(!store.insert_totp(&totp("alice")).await.unwrap(), "one authenticator app a user");
    assert!(store.claim_totp_step("alice", 10, 5).await.unwrap());
    assert!(!store.claim_totp_step("alice", 10, 6).await.unwrap());
    assert!(!store.claim_totp_step("alice", 9, 6).await.unwrap());
    assert!(store.claim_totp_step("alice", 11, 7).await.unwrap());
    assert!(store.rename_totp("alice", "Work phone").await.unwrap());
    let stored = store.get_totp("alice").await.unwrap().unwrap();
    assert_eq!((stored.last_step, stored.last_used, stored.name.as_str()), (11, Some(7), "Work phone"));
}

async fn concurrent_claims_of_one_totp_step_have_one_winner(b: Backend) {
    let store = b.store;
    store.insert_totp(&totp("alice")).await.unwrap();
    for step in 1..=20 {
        let (a, b) = (store.clone(), store.clone());
        let first = tokio::spawn(async move { a.claim_totp_step("alice", step, step).await.unwrap() });
        let second = tokio::spawn(async move { b.claim_totp_step("alice", step, step).await.unwrap() });
        let wins = [first.await.unwrap(), second.await.unwrap()].iter().filter(|won| **won).count();
        assert_eq!(wins, 1, "step {step} was accepted {wins} times");
    }
}

async fn devices_and_sign_in_history(b: Backend) {
    let store = b.store;
    assert!(!store.is_known_device("alice", "d1").await.unwrap());
    store.remember_device("alice", "d1", 100, Some(500)).await.unwrap();
    store.remember_device("alice", "d1", 200, None).await.unwrap();
    assert!(store.is_known_device("alice", "d1").await.unwrap());
    assert!(!store.is_known_device("bob", "d1").await.unwrap());
    assert_eq!(store.device_trusted_until("alice", "d1").await.unwrap(), Some(500), "a later plain visit keeps the trust");
    let trusted = store.trusted_devices("alice", 400).await.unwrap();
    assert_eq!(trusted, vec![DeviceRow { device_id: "d1".into(), first_seen: 100, last_seen: 200, trusted_until: Some(500) }]);
    assert!(store.trusted_devices("alice", 500).await.unwrap().is_empty(), "expired trust is not listed");
    store.untrust_device("alice", "d1").await.unwrap();
    assert!(store.trusted_devices("alice", 0).await.unwrap().is_empty());
    assert!(store.is_known_device("alice", "d1").await.unwrap(), "an untrusted device stays known");

    store.record_sign_in(&sign_in(100, "CH")).await.unwrap();
    store.record_sign_in(&sign_in(200, "DE")).await.unwrap();
    store.record_sign_in(&sign_in(200, "FR")).await.unwrap();
    assert_eq!(store.last_sign_in("alice").await.unwrap(), Some(sign_in(200, "FR")), "the later of equal times");
    assert!(store.has_signed_in_from("alice", "CH").await.unwrap());
    assert!(!store.has_signed_in_from("alice", "US").await.unwrap());
    assert_eq!(store.forget_sign_ins_before(150).await.unwrap(), 1);
    assert!(!store.has_signed_in_from("alice", "CH").await.unwrap());
}

async fn webauthn_credentials_are_unique_and_claimed_forward(b: Backend) {
    let store = b.store;
    assert!(store.insert_webauthn(&webauthn("alice", b"k1", "security_key")).await.unwrap());
    assert!(!store.insert_webauthn(&webauthn("bob", b"k1", "security_key")).await.unwrap(), "one credential id, one owner");
    assert!(store.insert_webauthn(&webauthn("alice", b"k2", "platform")).await.unwrap());
    let listed = store.webauthn_credentials("alice").await.unwrap();
    assert_eq!(listed.iter().map(|c| c.credential_id.as_slice()).collect::<Vec<_>>(), [b"k1", b"k2"]);
    let id = listed[0].id;
    assert_eq!(store.webauthn_credential(b"k1").await.unwrap().map(|c| c.id), Some(id));

    assert!(store.claim_webauthn_use(id, 0, "{\"a\":1}", 20).await.unwrap(), "a counterless authenticator may reuse 0");
    assert!(store.claim_webauthn_use(id, 5, "{\"a\":2}", 21).await.unwrap());
    assert!(!store.claim_webauthn_use(id, 5, "{\"a\":3}", 22).await.unwrap(), "a counter is claimed once");
    assert!(!store.claim_webauthn_use(id, 0, "{\"a\":3}", 22).await.unwrap(), "nor goes back to 0");
    store.flag_possible_clone(id, 23).await.unwrap();
    assert!(store.rename_webauthn("alice", id, "Yubikey").await.unwrap());
    assert!(!store.rename_webauthn("bob", id, "Mine").await.unwrap());
    let stored = store.webauthn_credential(b"k1").await.unwrap().unwrap();
    assert_eq!((stored.counter, stored.credential.as_str(), stored.last_used), (5, "{\"a\":2}", Some(21)));
    assert_eq!((stored.possible_clone_at, stored.name.as_str(), stored.discoverable), (Some(23), "Yubikey", true));
    assert!(!store.delete_webauthn("bob", id).await.unwrap());
    assert!(store.delete_webauthn("alice", id).await.unwrap());
    assert!(store.webauthn_credential(b"k1").await.unwrap().is_none());
}

async fn recovery_codes_are_spent_once(b: Backend) {
    let store = b.store;
    assert_eq!(store.recovery_codes_left("alice").await.unwrap(), (0, None));
    store.replace_recovery_codes("alice", &[[1; 32], [2; 32]], 50).await.unwrap();
    assert!(store.use_recovery_code("alice", &[1; 32], 60).await.unwrap());
    assert!(!store.use_recovery_code("alice", &[1; 32], 61).await.unwrap(), "spent");
    assert!(!store.use_recovery_code("bob", &[2; 32], 61).await.unwrap(), "another user's");
    assert_eq!(store.recovery_codes_left("alice").await.unwrap(), (1, Some(50)));
    store.replace_recovery_codes("alice", &[[3; 32]], 70).await.unwrap();
    assert!(!store.use_recovery_code("alice", &[2; 32], 71).await.unwrap(), "the old set stopped working");
    assert_eq!(store.recovery_codes_left("alice").await.unwrap(), (1, Some(70)));
}

async fn the_last_factor_is_kept_or_takes_the_recovery_codes(b: Backend) {
    let store = b.store;
    let usable = ["security_key", "platform"];
    store.insert_totp(&totp("alice")).await.unwrap();
    store.insert_webauthn(&webauthn("alice", b"k1", "other")).await.unwrap();
    store.replace_recovery_codes("alice", &[[1; 32]], 50).await.unwrap();
    let unusable = store.webauthn_credentials("alice").await.unwrap()[0].id;
    assert_eq!(store.remove_factor("alice", FactorRef::Webauthn(unusable + 100), &usable, true).await.unwrap(), Removal::NotFound);
    assert_eq!(store.remove_factor("alice", FactorRef::Totp, &usable, true).await.unwrap(), Removal::LastFactor);
    assert!(store.get_totp("alice").await.unwrap().is_some(), "a refused removal removes nothing");
    assert_eq!(store.remove_factor("alice", FactorRef::Webauthn(unusable), &usable, true).await.unwrap(), Removal::Removed);
    assert_eq!(store.remove_factor("alice", FactorRef::Totp, &usable, false).await.unwrap(), Removal::Removed);
    assert_eq!(store.recovery_codes_left("alice").await.unwrap().0, 0, "the codes went with the last factor");
}

async fn concurrent_removals_leave_a_factor(b: Backend) {
    let store = b.store;
    for round in 0..10 {
        let user = format!("user{round}");
        store.insert_totp(&totp(&user)).await.unwrap();
        store.insert_webauthn(&webauthn(&user, user.as_bytes(), "platform")).await.unwrap();
        let key = store.webauthn_credentials(&user).await.unwrap()[0].id;
        let remove = |factor: FactorRef| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move { store.remove_factor(&user, factor, &["platform"], true).await.unwrap() })
        };
        let (first, second) = (remove(FactorRef::Totp), remove(FactorRef::Webauthn(key)));
        let outcomes = [first.await.unwrap(), second.await.unwrap()];
        assert_eq!(outcomes.iter().filter(|o| **o == Removal::Removed).count(), 1, "round {round}: {outcomes:?}");
        let left = store.get_totp(&user).await.unwrap().is_some() as usize + store.webauthn_credentials(&user).await.unwrap().len();
        assert_eq!(left, 1, "round {round}: one factor is left");
    }
}

async fn signing_keys_are_swapped_only_from_the_expected_version(b: Backend) {
    let store = b.store;
    assert_eq!(store.signing_keys().await.unwrap(), None);
    assert!(store.save_signing_keys(None, "{\"keys\":[1]}").await.unwrap());
    assert!(!store.save_signing_keys(None, "{\"keys\":[2]}").await.unwrap(), "a first key is created once");
    let first = store.signing_keys().await.unwrap().unwrap();
    assert_eq!(first.json, "{\"keys\":[1]}");
    assert_eq!(store.signing_keys_version().await.unwrap(), Some(first.version));
    assert!(store.save_signing_keys(Some(first.version), "{\"keys\":[3]}").await.unwrap());
    assert!(!store.save_signing_keys(Some(first.version), "{\"keys\":[4]}").await.unwrap(), "a stale writer loses");
    let second = store.signing_keys().await.unwrap().unwrap();
    assert_eq!(second.json, "{\"keys\":[3]}");
    assert_ne!(second.version, first.version);
}

async fn an_mfa_reset_removes_everything_of_one_user(b: Backend) {
    let store = b.store;
    for user in ["alice", "bob"] {
        store.insert_totp(&totp(user)).await.unwrap();
        store.insert_webauthn(&webauthn(user, user.as_bytes(), "platform")).await.unwrap();
        store.replace_recovery_codes(user, &[[1; 32], [2; 32]], 50).await.unwrap();
        store.remember_device(user, "browser", 60, Some(1000)).await.unwrap();
    }
    let mut alices = session(1);
    alices.username = "alice".into();
    store.insert_session(&alices).await.unwrap();
    assert_eq!(store.count_sessions(alices.last_seen).await.unwrap(), 1);
    assert_eq!(store.count_sessions(alices.last_seen + 1).await.unwrap(), 0, "idle sessions are not counted");
    let reset = store.reset_mfa("alice").await.unwrap();
    assert_eq!(reset, MfaReset { factors: 2, recovery_codes: 2, browsers: 1, sessions: 1 });
    assert!(store.get_totp("alice").await.unwrap().is_none());
    assert!(store.webauthn_credentials("alice").await.unwrap().is_empty());
    assert_eq!(store.recovery_codes_left("alice").await.unwrap().0, 0);
    assert!(!store.is_known_device("alice", "browser").await.unwrap(), "a reset browser is new again");
    assert!(store.sessions_of("alice").await.unwrap().is_empty());
    assert!(store.get_totp("bob").await.unwrap().is_some(), "other users keep theirs");
    assert_eq!(store.recovery_codes_left("bob").await.unwrap().0, 2);
    assert_eq!(store.reset_mfa("alice").await.unwrap(), MfaReset::default(), "a second reset finds nothing");
}

async fn admin_tokens_are_found_by_hash_and_named_once(b: Backend) {
    let store = b.store;
    let token = AdminTokenRow {
        name: "helpdesk".into(),
        hash: [7; 32],
        scopes: vec!["users:read".into()],
        groups: vec!["acme".into()],
        created: 10,
        expires: Some(100),
        last_used: None,
    };
    assert!(store.insert_admin_token(&token).await.unwrap());
    assert!(!store.insert_admin_token(&AdminTokenRow { hash: [8; 32], ..token.clone() }).await.unwrap(), "one token per name");
    assert_eq!(store.admin_token(&[7; 32]).await.unwrap(), Some(token.clone()));
    assert_eq!(store.admin_token(&[8; 32]).await.unwrap(), None);
    store.touch_admin_token("helpdesk", 50).await.unwrap();
    assert_eq!(store.admin_tokens().await.unwrap()[0].last_used, Some(50));
    assert!(store.revoke_admin_token("helpdesk").await.unwrap());
    assert!(!store.revoke_admin_token("helpdesk").await.unwrap());
    assert_eq!(store.admin_token(&[7; 32]).await.unwrap(), None, "a revoked token is gone");
}

async fn audit_events_are_filtered_and_paged_newest_first(b: Backend) {
    let store = b.store;
    let event = |at: i64, kind: &str, user: &str, actor: &str| AuditRow {
        id: 0,
        at,
        kind: kind.into(),
        username: Some(user.into()),
        actor: actor.into(),
        ip: Some("192.0.2.1".into()),
        country: None,
        app: Some("app".into()),
        outcome: "success".into(),
        details: "{}".into(),
    };
    let mut ids = Vec::new();
    for (at, kind, user, actor) in [
        (10, "sign_in", "alice", "alice"),
        (20, "mfa_reset", "alice", "helpdesk"),
        (30, "sign_in", "bob", "bob"),
        (40, "sign_in", "alice", "alice"),
    ] {
        ids.push(store.record_audit(&event(at, kind, user, actor)).await.unwrap());
    }
    let query = |q: AuditQuery| {
        let store = store.clone();
        async move { store.audit_events(&AuditQuery { limit: 10, ..q }).await.unwrap().iter().map(|e| e.at).collect::<Vec<_>>() }
    };
    assert_eq!(query(AuditQuery::default()).await, [40, 30, 20, 10], "newest first");
    assert_eq!(query(AuditQuery { user: Some("alice".into()), ..Default::default() }).await, [40, 20, 10]);
    assert_eq!(query(AuditQuery { actor: Some("helpdesk".into()), ..Default::default() }).await, [20]);
    assert_eq!(query(AuditQuery { kind: Some("sign_in".into()), since: Some(15), until: Some(35), ..Default::default() }).await, [30]);
    assert_eq!(query(AuditQuery { before_id: Some(ids[2]), ..Default::default() }).await, [20, 10], "the next page");
    assert_eq!(query(AuditQuery { after_id: Some(ids[1]), ..Default::default() }).await, [40, 30], "newer than a seen event");
    assert_eq!(query(AuditQuery { within_users: Some(vec!["bob".into()]), ..Default::default() }).await, [30]);
    assert_eq!(query(AuditQuery { within_users: Some(vec![]), ..Default::default() }).await, Vec::<i64>::new());
    let two = store.audit_events(&AuditQuery { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0], AuditRow { id: ids[3], ..event(40, "sign_in", "alice", "alice") }, "every field reads back");
    assert_eq!(store.forget_audit_before(25).await.unwrap(), 2);
    assert_eq!(query(AuditQuery::default()).await, [40, 30]);
}

async fn a_ticket_is_spent_once_by_its_user_before_it_expires(b: Backend) {
    let store = b.store;
    let ticket = |hash: u8| TicketRow {
        id: 0,
        username: "alice".into(),
        hash: [hash; 32],
        created: 10,
        expires: 100,
        used_at: None,
        created_by: "helpdesk".into(),
    };
    let first = store.insert_ticket(&ticket(1)).await.unwrap();
    let second = store.insert_ticket(&ticket(2)).await.unwrap();
    store.insert_ticket(&ticket(3)).await.unwrap();
    assert!(!store.claim_ticket(&[1; 32], "bob", 50).await.unwrap(), "only by its user");
    assert!(!store.claim_ticket(&[3; 32], "alice", 100).await.unwrap(), "not once expired");
    let claims =
        [store.clone(), store.clone()].map(|store| tokio::spawn(async move { store.claim_ticket(&[1; 32], "alice", 50).await.unwrap() }));
    let mut wins = 0;
    for claim in claims {
        wins += claim.await.unwrap() as usize;
    }
    assert_eq!(wins, 1, "spent once");
    assert!(store.revoke_ticket("alice", second).await.unwrap());
    assert!(!store.claim_ticket(&[2; 32], "alice", 50).await.unwrap(), "not once withdrawn");
    assert!(!store.revoke_ticket("bob", first).await.unwrap(), "only the user's own");
    let listed = store.tickets_of("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1], TicketRow { id: first, used_at: Some(50), ..ticket(1) }, "newest first, every field read back");
}
