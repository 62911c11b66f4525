//! The shared cache in Redis, for several gateway instances.
//!
//! Commands go through redis' `ConnectionManager`, which reconnects by
//! itself; each one is also bounded by the configured timeout, so a dead
//! Redis gives an error in that time and never a hung request. Values are
//! sealed with the gateway's key, bound to their Redis key, so that whoever
//! reads Redis learns nothing of codes or ceremony state and cannot move a
//! value to another key. Invalidations travel on a pub/sub channel that a
//! background task listens to, reconnecting every second while it is down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, Script};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::memory::CHANNEL_CAPACITY;
use super::{Bound, Cache, CacheError, CacheEvent, Counter, Counters, Invalidation, OneTimeValues, Refusal};
use crate::clock::Clock;
use crate::crypto::Secrets;

/// How long the listener waits before connecting again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` (TLS); may hold a password, which never
    /// appears in an error or a log line.
    pub url: String,
    /// Prepended to every key and the channel, so that several gateways
    /// (or tests) can share one Redis.
    pub key_prefix: String,
    /// For connecting and for each command.
    pub timeout: Duration,
}

pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    redact: Redactor,
    events: broadcast::Sender<CacheEvent>,
    listening: Arc<AtomicBool>,
    listener: JoinHandle<()>,
}

impl RedisCache {
    /// Connects, subscribes to the invalidation channel and starts the task
    /// that keeps listening to it; fails if Redis cannot be reached in time.
    pub async fn connect(options: &RedisOptions, secrets: Arc<Secrets>, clock: Arc<dyn Clock>) -> Result<Self, CacheError> {
        let redact = Redactor::for_url(&options.url);
        let client = Client::open(options.url.as_str()).map_err(|e| redact.unavailable(e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1);
        let connection = within(options.timeout, &redact, ConnectionManager::new_with_config(client.clone(), config)).await?;
        let channel = format!("{}invalidate", options.key_prefix);
        let pubsub = within(options.timeout, &redact, subscribe(&client, &channel)).await?;
        let (events, _) = broadcast::channel(CHANNEL_CAPACITY);
        let listening = Arc::new(AtomicBool::new(true));
        let listener = Listener { client, channel, timeout: options.timeout, redact: redact.clone(), events: events.clone() };
        let listener = tokio::spawn(listener.run(pubsub, listening.clone()));
        Ok(Self {
            connection,
            prefix: options.key_prefix.clone(),
            timeout: options.timeout,
            secrets,
            clock,
            redact,
            events,
            listening,
            listener,
        })
    }

    /// Runs a command or script with the timeout, errors redacted.
    async fn run<T: redis::FromRedisValue + Send>(&self, command: impl RedisCall) -> Result<T, CacheError> {
        let mut connection = self.connection.clone();
        within(self.timeout, &self.redact, command.call(&mut connection)).await
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}value:{key}", self.prefix)
    }

    fn group_link_key(&self, key: &str) -> String {
        format!("{}group-of:{key}", self.prefix)
    }

    fn pool_key(&self, pool: &str) -> String {
        format!("{}pool:{pool}", self.prefix)
    }

    fn counter_key(&self, bucket: &str, digest: &[u8; 16]) -> String {
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("{}count:{bucket}:{hex}", self.prefix)
    }

    fn seal(&self, redis_key: &str, value: &[u8]) -> Vec<u8> {
        self.secrets.seal(&seal_context(redis_key), value)
    }

    fn open(&self, redis_key: &str, sealed: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, CacheError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let opened =
            self.secrets.open(&seal_context(redis_key), &sealed).map_err(|_| CacheError::Corrupt(format!("{redis_key} does not open")))?;
        Ok(Some(opened.to_vec()))
    }
}

impl Drop for RedisCache {
    /// The listener ends with the cache: nothing keeps reconnecting for a
    /// gateway that is gone.
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Binds a sealed value to its key.
fn seal_context(redis_key: &str) -> Vec<u8> {
    [b"stepgate cache value\n".as_slice(), redis_key.as_bytes()].concat()
}

/// A command or a script invocation, run on a connection.
trait RedisCall {
    fn call<T: redis::FromRedisValue + Send>(
        self,
        connection: &mut ConnectionManager,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send;
}

impl RedisCall for redis::Cmd {
    async fn call<T: redis::FromRedisValue + Send>(self, connection: &mut ConnectionManager) -> redis::RedisResult<T> {
        self.query_async(connection).await
    }
}

impl RedisCall for redis::ScriptInvocation<'_> {
    async fn call<T: redis::FromRedisValue + Send>(self, connection: &mut ConnectionManager) -> redis::RedisResult<T> {
        self.invoke_async(connection).await
    }
}

/// Bounds `future` by `timeout`; its error, if any, without secrets.
async fn within<T>(timeout: Duration, redact: &Redactor, future: impl Future<Output = redis::RedisResult<T>>) -> Result<T, CacheError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_timeout() => Err(CacheError::NoAnswer(timeout)),
        Ok(Err(e)) => Err(redact.unavailable(e)),
        Err(_) => Err(CacheError::NoAnswer(timeout)),
    }
}

async fn subscribe(client: &Client, channel: &str) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Removes the URL's password from error messages.
#[derive(Clone)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn for_url(url: &str) -> Self {
        let password = url::Url::parse(url).ok().and_then(|url| url.password().map(str::to_string));
        let secrets = password.map(|raw| vec![percent_decode(&raw), raw]).unwrap_or_default();
        Self { secrets: secrets.into_iter().filter(|secret| !secret.is_empty()).collect() }
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> CacheError {
        let mut message = error.to_string();
        for secret in &self.secrets {
            message = message.replace(secret.as_str(), "***");
        }
        CacheError::Unavailable(message)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            bytes.get(i + 1..i + 3).and_then(|pair| std::str::from_utf8(pair).ok()).and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The background task relaying invalidations from Redis to subscribers.
struct Listener {
    client: Client,
    channel: String,
    timeout: Duration,
    redact: Redactor,
    events: broadcast::Sender<CacheEvent>,
}

impl Listener {
    /// Relays until the connection drops, then reconnects every second;
    /// logs each change of reachability once, not each failed attempt.
    async fn run(self, first: PubSub, listening: Arc<AtomicBool>) {
        let mut pubsub = Some(first);
        loop {
            if let Some(connected) = pubsub.take() {
                listening.store(true, Ordering::SeqCst);
                // Messages published while nobody listened are lost.
                let _ = self.events.send(CacheEvent::MaybeMissed);
                self.relay(connected).await;
                listening.store(false, Ordering::SeqCst);
                tracing::warn!("invalidation channel lost: sessions are read from the store until it is back");
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
            match within(self.timeout, &self.redact, subscribe(&self.client, &self.channel)).await {
                Ok(connected) => {
                    tracing::info!("invalidation channel back");
                    pubsub = Some(connected);
                }
                Err(e) => tracing::debug!(error = %e, "invalidation channel still lost"),
            }
        }
    }

    async fn relay(&self, pubsub: PubSub) {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            match serde_json::from_slice::<Invalidation>(message.get_payload_bytes()) {
                Ok(invalidation) => {
                    let _ = self.events.send(CacheEvent::Invalidated(invalidation));
                }
                // A message from a newer gateway, maybe: forget everything.
                Err(_) => {
                    let _ = self.events.send(CacheEvent::MaybeMissed);
                }
            }
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn publish(&self, message: &Invalidation) -> Result<(), CacheError> {
        let payload = serde_json::to_vec(message).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        self.run::<i64>(redis::cmd("PUBLISH").arg(format!("{}invalidate", self.prefix)).arg(payload).clone()).await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.events.subscribe()
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.run::<String>(redis::cmd("PING")).await.map(|_| ())
    }
}

/// Checks every counter is under its limit, then counts one on each; the
/// window starts at a key's first count. KEYS: the counters; ARGV[1]: the
/// window; ARGV[i + 1]: the limit of KEYS[i]. Returns {1, 0} when counted,
/// {0, seconds left} when refused.
static COUNT_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        for i, key in ipairs(KEYS) do
            local count = tonumber(redis.call('GET', key) or '0')
            if count >= tonumber(ARGV[i + 1]) then
                return {0, redis.call('TTL', key)}
            end
        end
        for _, key in ipairs(KEYS) do
            if redis.call('INCR', key) == 1 or redis.call('TTL', key) < 0 then
                redis.call('EXPIRE', key, ARGV[1])
            end
        end
        return {1, 0}
        ",
    )
});

/// Keeps a value counted in its pool (a sorted set of keys by expiry) and
/// in its group, if it has one and both have room. A value replacing one
/// of its key first removes the old one, whatever comes after. KEYS[1]:
/// the value, KEYS[2]: the pool, KEYS[3]: the link to the value's group,
/// KEYS[4]: the group (if any). ARGV: value, ttl, now, pool capacity,
/// group capacity. Returns 1 when kept, 0 when refused.
static PUT_BOUNDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[3])
        local old_group = redis.call('GET', KEYS[3])
        if old_group then
            redis.call('ZREM', old_group, KEYS[1])
        end
        redis.call('DEL', KEYS[1], KEYS[3])
        redis.call('ZREM', KEYS[2], KEYS[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
            return 0
        end
        if KEYS[4] then
            redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
            if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[5]) then
                return 0
            end
            redis.call('ZADD', KEYS[4], now + ttl, KEYS[1])
            redis.call('EXPIRE', KEYS[4], ttl)
            redis.call('SET', KEYS[3], KEYS[4], 'EX', ttl)
        end
        redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
        redis.call('EXPIRE', KEYS[2], ttl)
        redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
        return 1
        ",
    )
});

/// Takes a value out of its pool and group. KEYS[1]: the value, KEYS[2]:
/// the pool, KEYS[3]: the link to its group.
static TAKE_BOUNDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local value = redis.call('GET', KEYS[1])
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], KEYS[1])
        local group = redis.call('GET', KEYS[3])
        if group then
            redis.call('ZREM', group, KEYS[1])
            redis.call('DEL', KEYS[3])
        end
        return value
        ",
    )
});

#[async_trait]
impl Counters for RedisCache {
    async fn count_all(&self, counters: &[Counter], window: i64) -> Result<Result<(), Refusal>, CacheError> {
        let mut invocation = COUNT_ALL.prepare_invoke();
        invocation.arg(window);
        for counter in counters {
            invocation.key(self.counter_key(counter.bucket, &counter.digest)).arg(counter.limit);
        }
        let (counted, retry_after): (i64, i64) = self.run(invocation).await?;
        Ok(match counted {
            1 => Ok(()),
            _ => Err(Refusal::Limit { retry_after: retry_after.max(1) }),
        })
    }

    async fn reset(&self, counter: &Counter) -> Result<(), CacheError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.counter_key(counter.bucket, &counter.digest)).clone()).await.map(|_| ())
    }

    async fn counted(&self, counter: &Counter) -> Result<u32, CacheError> {
        let count: Option<i64> = self.run(redis::cmd("GET").arg(self.counter_key(counter.bucket, &counter.digest)).clone()).await?;
        Ok(count.map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX)))
    }

    async fn keys_in(&self, bucket: &'static str) -> Result<usize, CacheError> {
        let pattern = format!("{}*", glob_escape(&format!("{}count:{bucket}:", self.prefix)));
        let mut cursor = 0u64;
        let mut count = 0;
        loop {
            let (next, keys): (u64, Vec<String>) =
                self.run(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone()).await?;
            count += keys.len();
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }
}

fn glob_escape(text: &str) -> String {
    text.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

#[async_trait]
impl OneTimeValues for RedisCache {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: i64) -> Result<(), CacheError> {
        let redis_key = self.value_key(key);
        let sealed = self.seal(&redis_key, &value);
        self.run::<()>(redis::cmd("SET").arg(&redis_key).arg(sealed).arg("EX").arg(ttl.max(1)).clone()).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let redis_key = self.value_key(key);
        let sealed: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(&redis_key).clone()).await?;
        self.open(&redis_key, sealed)
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let redis_key = self.value_key(key);
        let sealed: Option<Vec<u8>> = self.run(redis::cmd("GETDEL").arg(&redis_key).clone()).await?;
        self.open(&redis_key, sealed)
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.value_key(key)).clone()).await.map(|_| ())
    }

    async fn put_bounded(&self, key: &str, value: Vec<u8>, ttl: i64, bound: &Bound<'_>) -> Result<bool, CacheError> {
        let (redis_key, pool_key) = (self.value_key(key), self.pool_key(bound.pool));
        let sealed = self.seal(&redis_key, &value);
        let mut invocation = PUT_BOUNDED.prepare_invoke();
        invocation.key(&redis_key).key(&pool_key).key(self.group_link_key(key));
        if let Some((group, _)) = bound.group {
            invocation.key(format!("{pool_key}:group:{group}"));
        }
        let group_capacity = bound.group.map_or(0, |(_, capacity)| capacity);
        invocation.arg(sealed).arg(ttl.max(1)).arg(self.clock.now()).arg(bound.capacity).arg(group_capacity);
        let kept: i64 = self.run(invocation).await?;
        Ok(kept == 1)
    }

    async fn take_bounded(&self, key: &str, pool: &'static str) -> Result<Option<Vec<u8>>, CacheError> {
        let redis_key = self.value_key(key);
        let mut invocation = TAKE_BOUNDED.prepare_invoke();
        invocation.key(&redis_key).key(self.pool_key(pool)).key(self.group_link_key(key));
        let sealed: Option<Vec<u8>> = self.run(invocation).await?;
        self.open(&redis_key, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_redacted_raw_and_decoded() {
        let redact = Redactor::for_url("redis://user:p%40ss@example.invalid:6379/0");
        let CacheError::Unavailable(message) = redact.unavailable("failed for redis://user:p%40ss@host: p@ss") else {
            panic!("unavailable expected");
        };
        assert!(!message.contains("p%40ss") && !message.contains("p@ss"), "{message}");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
