//! The Redis cache's invalidation listener losing its connection and
//! finding it again, and a Redis that stops answering, on a Redis server
//! of the test's own: it kills a connection and pauses the server.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::cache::{Cache, CacheEvent, Invalidation, RedisCache};
use stepgate::clock::SystemClock;
use stepgate::crypto::Secrets;

use common::captured_logs::Logs;
use common::redis::TestRedis;
use common::servers::PrivateRedis;

#[tokio::test]
async fn the_listener_reconnects_says_so_once_and_ends_with_the_cache() {
    let (logs, _capture) = Logs::capture();
    let server = PrivateRedis::start();
    let redis = TestRedis::at(server.url());
    let before = pubsub_clients(&redis);
    let cache = redis.cache().await;
    let listener_id = only_new(&before, &pubsub_clients(&redis));
    let other = redis.cache().await;
    let mut heard = cache.subscribe();

    admin::<()>(&redis, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(listener_id));
    wait_for("the listener to notice", || !cache.is_listening()).await;
    let event = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("it reconnects").unwrap();
    assert_eq!(event, CacheEvent::MaybeMissed, "subscribers learn that messages may be lost");
    assert!(cache.is_listening());
    let message = Invalidation::Session([9; 32]);
    other.publish(&message).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("messages arrive again").unwrap();
    assert_eq!(event, CacheEvent::Invalidated(message));
    assert_eq!(logs.count("invalidation channel lost"), 1, "{}", logs.text());
    assert_eq!(logs.count("invalidation channel back"), 1, "{}", logs.text());

    let listeners = pubsub_clients(&redis);
    drop(cache);
    wait_for("the listener to end with its cache", || pubsub_clients(&redis).len() < listeners.len()).await;

    a_paused_redis_is_an_error_within_the_timeout(&redis).await;
}

/// Checked after the rest: pausing Redis would disturb it.
async fn a_paused_redis_is_an_error_within_the_timeout(redis: &TestRedis) {
    let mut options = redis.options.clone();
    options.timeout = Duration::from_millis(300);
    let cache = RedisCache::connect(&options, Arc::new(Secrets::from_master(&[1; 32])), Arc::new(SystemClock)).await.unwrap();
    admin::<()>(redis, redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("ALL"));
    // Far longer than the timeout: only a hang runs into it.
    let answer = tokio::time::timeout(Duration::from_secs(8), cache.ping()).await;
    assert!(matches!(answer, Ok(Err(_))), "a Redis that does not answer is an error, not a wait");
    admin::<()>(redis, redis::cmd("CLIENT").arg("UNPAUSE"));
}

fn admin<T: redis::FromRedisValue>(redis: &TestRedis, command: &redis::Cmd) -> T {
    let mut connection = redis::Client::open(redis.options.url.as_str()).unwrap().get_connection().unwrap();
    command.query(&mut connection).unwrap()
}

/// The ids of the connections in subscriber mode.
fn pubsub_clients(redis: &TestRedis) -> BTreeSet<u64> {
    let text: String = admin(redis, redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"));
    text.lines().filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok()).collect()
}

fn only_new(before: &BTreeSet<u64>, after: &BTreeSet<u64>) -> u64 {
    let new: Vec<u64> = after.difference(before).copied().collect();
    assert_eq!(new.len(), 1, "one new subscriber expected (is another test using Redis?): {new:?}");
    new[0]
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
