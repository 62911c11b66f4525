//! Two gateway instances sharing one Redis: what one counts, starts or
//! holds, the other sees. Needs a running Redis (see `common::redis`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::cache::{Bound, Cache, CacheError, CacheEvent, Invalidation, OneTimeValues, RedisCache, RedisOptions};
use stepgate::clock::{Clock, SystemClock};
use stepgate::config::{RecoveryCodesConfig, SessionConfig, WebauthnConfig};
use stepgate::crypto::Secrets;
use stepgate::factors::recovery::RecoveryCodes;
use stepgate::factors::webauthn::{RelyingParty, WebauthnFactor, WebauthnFailure};
use stepgate::methods::Method;
use stepgate::session::Sessions;
use stepgate::store::{SqliteStore, Store};
use stepgate::throttle::{Refusal, Scope, Throttle, ThrottleError};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use common::redis::TestRedis;
use common::MASTER_KEY;

fn secrets() -> Secrets {
    Secrets::from_master(&MASTER_KEY)
}

fn throttle(cache: Arc<RedisCache>, limit: u32) -> Throttle {
    Throttle::new(cache, &secrets(), 300, move |_| limit)
}

#[tokio::test]
async fn attempts_on_two_instances_count_together() {
    let redis = TestRedis::new();
    let (one, two) = (throttle(redis.cache().await, 5), throttle(redis.cache().await, 5));
    let (alice_on_one, alice_on_two) = (one.key(Scope::User, &["alice"]), two.key(Scope::User, &["alice"]));
    assert_eq!(alice_on_one, alice_on_two, "the same key on every instance");
    for throttle in [&one, &two, &one, &two, &one] {
        assert!(!two.is_limited(&alice_on_two).await.unwrap());
        throttle.reserve(&[alice_on_one]).await.unwrap();
    }
    assert!(one.is_limited(&alice_on_one).await.unwrap() && two.is_limited(&alice_on_two).await.unwrap(), "both see the limit");
    for throttle in [&one, &two] {
        match throttle.reserve(&[alice_on_one]).await {
            Err(ThrottleError::Refusal(Refusal::Limit { retry_after })) => assert!((1..=300).contains(&retry_after), "{retry_after}"),
            other => panic!("the sixth attempt was not refused: {other:?}"),
        }
    }
    let bob = one.key(Scope::User, &["bob"]);
    assert!(two.reserve(&[bob, alice_on_one]).await.is_err(), "all or nothing");
    assert_eq!(one.keys_in(Scope::User).await.unwrap(), 1, "the refusal counted nothing for bob");
    two.reset(&alice_on_two).await.unwrap();
    one.reserve(&[alice_on_one]).await.expect("a reset on one instance counts on the other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_attempts_on_two_instances_never_pass_the_limit() {
    let redis = TestRedis::new();
    let instances = [Arc::new(throttle(redis.cache().await, 10)), Arc::new(throttle(redis.cache().await, 10))];
    let key = instances[0].key(Scope::SecondFactor, &["alice"]);
    let address = instances[0].key(Scope::Address, &["192.0.2.1"]);
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let throttle = instances[n % 2].clone();
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..5 {
                    allowed += usize::from(throttle.reserve(&[key, address]).await.is_ok());
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    assert_eq!(allowed, 10);
}

struct Instance {
    webauthn: WebauthnFactor,
}

async fn instances(redis: &TestRedis) -> (Instance, Instance, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut make = Vec::new();
    for _ in 0..2 {
        let cache = redis.cache().await;
        let reachability = stepgate::health::Reachability::new(clock.clone());
        let sessions = Arc::new(Sessions::new(store.clone(), cache.clone(), reachability, clock.clone(), SessionConfig::default()));
        let webauthn = WebauthnFactor::new(store.clone(), cache, sessions, Arc::new(secrets()), clock.clone(), WebauthnConfig::default());
        make.push(Instance { webauthn });
    }
    let two = make.pop().unwrap();
    let one = make.pop().unwrap();
    (one, two, dir)
}

fn relying_party() -> RelyingParty {
    let origin = url::Url::parse("https://app.test").unwrap();
    RelyingParty::new("app.test", "app.test", &[origin], "Test", 300).unwrap()
}

#[tokio::test]
async fn a_ceremony_started_on_one_instance_finishes_on_the_other_once() {
    let redis = TestRedis::new();
    let (one, two, _dir) = instances(&redis).await;
    let rp = relying_party();
    let origin = url::Url::parse("https://app.test").unwrap();
    let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    let owner = [7u8; 32];

    let options = one.webauthn.start_registration(&rp, owner, "alice", Method::SecurityKey, "Key").await.unwrap();
    let answer = key.do_registration(origin.clone(), options).unwrap();
    let registered = two.webauthn.finish_registration(&rp, owner, "alice", &answer).await.expect("finished on the other instance");
    assert_eq!(registered.kind, Method::SecurityKey);
    let again = one.webauthn.finish_registration(&rp, owner, "alice", &answer).await;
    assert!(matches!(again, Err(WebauthnFailure::NoCeremony)), "a ceremony completes once");

    let options = two.webauthn.start_authentication(&rp, owner, "alice").await.unwrap();
    let answer = key.do_authentication(origin, options).unwrap();
    let (first, second) = tokio::join!(
        one.webauthn.finish_authentication(&rp, owner, "alice", &answer),
        two.webauthn.finish_authentication(&rp, owner, "alice", &answer)
    );
    let finished = [first.is_ok(), second.is_ok()];
    assert_eq!(finished.iter().filter(|ok| **ok).count(), 1, "exactly one instance finishes it: {finished:?}");
    assert!(redis.keys().iter().all(|key| !key.contains("webauthn:")), "no ceremony left behind: {:?}", redis.keys());
}

#[tokio::test]
async fn ceremonies_are_sealed_and_bounded_per_address_across_instances() {
    let redis = TestRedis::new();
    let (one, two) = (redis.cache().await, redis.cache().await);
    let bound = |group| Bound { pool: "ceremonies", capacity: 3, group: Some((group, 2)) };
    assert!(one.put_bounded("a", b"secret state".to_vec(), 60, &bound("192.0.2.1")).await.unwrap());
    assert!(two.put_bounded("b", b"secret state".to_vec(), 60, &bound("192.0.2.1")).await.unwrap());
    assert!(!one.put_bounded("c", b"x".to_vec(), 60, &bound("192.0.2.1")).await.unwrap(), "the address has two pending");
    assert!(two.put_bounded("a", b"replaced".to_vec(), 60, &bound("192.0.2.1")).await.unwrap(), "a replacement fits");
    assert!(two.put_bounded("c", b"x".to_vec(), 60, &bound("192.0.2.2")).await.unwrap());
    assert!(!one.put_bounded("d", b"x".to_vec(), 60, &bound("192.0.2.3")).await.unwrap(), "the pool is full");
    assert_eq!(one.take_bounded("a", "ceremonies").await.unwrap().as_deref(), Some(&b"replaced"[..]));
    assert_eq!(two.take_bounded("a", "ceremonies").await.unwrap(), None, "taken once");
    assert!(two.put_bounded("d", b"x".to_vec(), 60, &bound("192.0.2.1")).await.unwrap(), "taking freed a place in pool and group");

    let mut connection = redis::Client::open(redis.options.url.as_str()).unwrap().get_connection().unwrap();
    let raw: Vec<u8> = redis::cmd("GET").arg(format!("{}value:b", redis.options.key_prefix)).query(&mut connection).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"), "values are sealed in Redis");
}

#[tokio::test]
async fn a_reveal_made_on_one_instance_is_seen_and_dismissed_on_both() {
    let redis = TestRedis::new();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let recovery =
        |cache| RecoveryCodes::new(store.clone(), cache, Arc::new(secrets()), Arc::new(SystemClock), RecoveryCodesConfig::default());
    let (one, two) = (recovery(redis.cache().await), recovery(redis.cache().await));
    let session = [5u8; 32];
    one.hold_for_reveal(session, "alice", vec!["abcde-fghjk".into()]).await.unwrap();
    let shown = two.reveal(session, "alice").await.unwrap().expect("seen on the other instance");
    assert_eq!(shown[0].as_str(), "abcde-fghjk");
    assert!(two.reveal([6; 32], "alice").await.unwrap().is_none(), "only to the session it was made for");
    assert!(redis.keys().iter().all(|key| !key.contains("alice")), "no user name in Redis keys: {:?}", redis.keys());
    two.dismiss_reveal(session, "alice").await.unwrap();
    assert!(one.reveal(session, "alice").await.unwrap().is_none(), "dismissed on both");
}

#[tokio::test]
async fn an_invalidation_reaches_the_other_instance() {
    let redis = TestRedis::new();
    let (one, two) = (redis.cache().await, redis.cache().await);
    assert!(one.is_listening() && two.is_listening());
    let mut heard = two.subscribe();
    let message = Invalidation::User("alice".into());
    one.publish(&message).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match heard.recv().await.unwrap() {
                CacheEvent::MaybeMissed => continue,
                event => return event,
            }
        }
    })
    .await
    .expect("the message arrives");
    assert_eq!(event, CacheEvent::Invalidated(message));
    one.ping().await.unwrap();
}

fn unavailable_message(result: Result<RedisCache, CacheError>) -> String {
    match result {
        Ok(_) => panic!("connected with a wrong password or to nothing"),
        Err(e) => format!("{e} {e:?}"),
    }
}

#[tokio::test]
async fn the_url_password_never_appears_in_a_connect_error() {
    let password = "Sup3r-Secret%2FPassw0rd";
    let mut real = url::Url::parse(&common::redis::url()).unwrap();
    real.set_username("nobody").unwrap();
    real.set_password(Some(password)).unwrap();
    for url in [real.to_string(), format!("redis://nobody:{password}@127.0.0.1:1/"), format!("redis://nobody:{password}@[::1/")] {
        let options = RedisOptions { url, key_prefix: "stepgate-test-unused:".into(), timeout: Duration::from_secs(2) };
        let message = unavailable_message(RedisCache::connect(&options, Arc::new(secrets()), Arc::new(SystemClock)).await);
        assert!(!message.contains("Sup3r") && !message.contains("Passw0rd"), "{message}");
    }
}

#[tokio::test]
async fn a_redis_that_never_answers_is_an_error_within_the_timeout() {
    // Connections are accepted (by the kernel) but nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let options = RedisOptions { url, key_prefix: "unused:".into(), timeout: Duration::from_millis(300) };
    let started = Instant::now();
    let message = unavailable_message(RedisCache::connect(&options, Arc::new(secrets()), Arc::new(SystemClock)).await);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}: {message}", started.elapsed());
}
