//! PostgreSQL and Redis for tests that run gateways as a cluster: a schema
//! and a key prefix of the test's own, so tests run in parallel and leave
//! nothing behind. The servers are the machine's (127.0.0.1:5432, database
//! `test`; 127.0.0.1:6379), or those `STEPGATE_TEST_POSTGRES_URL` and
//! `STEPGATE_TEST_REDIS_URL` name. Without them a test fails and says how to
//! start them: it never skips.

use std::time::Duration;

pub fn postgres_url() -> String {
    std::env::var("STEPGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("STEPGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh schema and key prefix on the shared servers.
pub struct SharedBackends {
    pub schema: String,
    pub key_prefix: String,
}

impl SharedBackends {
    pub async fn new() -> Self {
        let tag: String = stepgate::crypto::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect();
        let backends = Self { schema: format!("test_{tag}"), key_prefix: format!("test:{tag}:") };
        backends.postgres().await;
        backends.redis().await;
        backends
    }

    /// The `[store]` and `[cache]` sections that use them.
    pub fn config(&self) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n\n[cache]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
            postgres_url(),
            self.schema,
            redis_url(),
            self.key_prefix
        )
    }

    /// Drops the schema and deletes the keys.
    pub async fn remove(self) {
        let pool = self.postgres().await;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).execute(&pool).await.expect("drop the test schema");
        let mut redis = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", self.key_prefix)).query_async(&mut redis).await.expect("list keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut redis).await.expect("delete keys");
        }
    }

    async fn postgres(&self) -> sqlx::PgPool {
        let options = sqlx::postgres::PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(5));
        options.connect(&postgres_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed at {} ({e}): start it (`service postgresql start`) or set STEPGATE_TEST_POSTGRES_URL",
                postgres_url()
            )
        })
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(redis_url()).expect("a Redis URL");
        let connected = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await;
        match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                panic!("Redis is needed at {} ({e}): start it (`service redis-server start`) or set STEPGATE_TEST_REDIS_URL", redis_url())
            }
            Err(_) => {
                panic!("Redis at {} does not answer: start it (`service redis-server start`) or set STEPGATE_TEST_REDIS_URL", redis_url())
            }
        }
    }
}
