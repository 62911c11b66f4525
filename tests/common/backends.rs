//! PostgreSQL and Redis for tests that run gateways as a cluster: a schema
//! and a key prefix of the test's own, removed when the test ends (passed
//! or not), so tests run in parallel and leave nothing behind. Where the
//! servers are, and what happens when they are missing: see
//! `postgres.rs` and `redis.rs` beside this file.

use super::postgres::{self, TestSchema};
use super::redis::TestRedis;

pub struct SharedBackends {
    schema: TestSchema,
    redis: TestRedis,
}

impl SharedBackends {
    pub async fn new() -> Self {
        Self { schema: postgres::schema().await, redis: TestRedis::new() }
    }

    /// Deletes every session behind the gateways' backs: as if the
    /// announcement of their end had been lost.
    pub async fn delete_sessions_unannounced(&self) {
        let pool = sqlx::PgPool::connect(&self.schema.options.url).await.expect("PostgreSQL");
        sqlx::query(&format!("DELETE FROM {}.sessions", self.schema.name())).execute(&pool).await.expect("delete the sessions");
    }

    /// The `[store]` and `[cache]` sections that use them.
    pub fn config(&self) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n\n[cache]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
            self.schema.options.url,
            self.schema.name(),
            self.redis.options.url,
            self.redis.options.key_prefix
        )
    }
}
