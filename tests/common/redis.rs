//! A real Redis for tests of the shared cache: each test gets its own key
//! prefix, and its keys are deleted when it ends. Redis must be running:
//! these tests fail, never skip, without it.

use std::sync::Arc;
use std::time::Duration;

use stepgate::cache::{RedisCache, RedisOptions};
use stepgate::clock::SystemClock;
use stepgate::crypto::Secrets;

use super::MASTER_KEY;

/// Where the tests' Redis is.
pub const URL_ENV: &str = "STEPGATE_TEST_REDIS_URL";
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A prefix of Redis of the test's own.
pub struct TestRedis {
    pub options: RedisOptions,
}

impl TestRedis {
    /// Panics, saying how to start Redis, when it cannot be reached.
    pub fn new() -> Self {
        Self::at(url())
    }

    /// A prefix on the Redis at `url`.
    pub fn at(url: String) -> Self {
        if let Err(e) = connection(&url) {
            panic!(
                "these tests need Redis at {url} ({e}): start it with `service redis-server start`, \
                 or point {URL_ENV} at one"
            );
        }
        let key_prefix = format!("stepgate-test:{}:", stepgate::crypto::random_token());
        Self { options: RedisOptions { url, key_prefix, timeout: Duration::from_secs(2) } }
    }

    /// One gateway instance's cache on this prefix.
    pub async fn cache(&self) -> Arc<RedisCache> {
        let secrets = Arc::new(Secrets::from_master(&MASTER_KEY));
        let cache = RedisCache::connect(&self.options, secrets, Arc::new(SystemClock)).await;
        Arc::new(cache.unwrap_or_else(|e| panic!("connect to Redis: {e}")))
    }

    /// The keys under this test's prefix.
    pub fn keys(&self) -> Vec<String> {
        let mut connection = connection(&self.options.url).expect("Redis");
        ::redis::cmd("KEYS").arg(format!("{}*", self.options.key_prefix)).query(&mut connection).expect("KEYS")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let mut connection = connection(&self.options.url).expect("Redis");
            let _: i64 = ::redis::cmd("DEL").arg(keys).query(&mut connection).expect("DEL");
        }
    }
}

fn connection(url: &str) -> ::redis::RedisResult<::redis::Connection> {
    ::redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}
