//! A fresh PostgreSQL schema per test, dropped when the test ends (passed
//! or panicked).
//!
//! The server is `STEPGATE_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (trust authentication). When it
//! cannot be reached the test fails, saying how to start it: a database
//! test that skips itself is a test that never runs.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use stepgate::store::{PostgresOptions, PostgresStore};

pub const URL_ENV: &str = "STEPGATE_TEST_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A schema of its own; dropped (with everything in it) when this is.
pub struct TestSchema {
    pub options: PostgresOptions,
}

/// A new, empty schema on the test server.
pub async fn schema() -> TestSchema {
    let url = url();
    if let Err(e) = PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(5)).connect(&url).await {
        panic!(
            "PostgreSQL is not reachable for the store tests ({e}). Start it with `service postgresql start` \
             (trust authentication, a database named test), or set {URL_ENV} to a server you have."
        );
    }
    let name = format!("stepgate_test_{}", uuid::Uuid::new_v4().simple());
    let options = PostgresOptions { url, pool_size: 4, connect_timeout: Duration::from_secs(10), schema: Some(name) };
    TestSchema { options }
}

impl TestSchema {
    /// A store on this schema (migrated); several may share it, as instances do.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.options).await.unwrap_or_else(|e| panic!("cannot open the test schema: {e}"))
    }

    pub fn name(&self) -> &str {
        self.options.schema.as_deref().unwrap_or_default()
    }
}

impl Drop for TestSchema {
    /// Drops the schema from a thread with its own runtime: `Drop` cannot
    /// await, and the test's runtime may be single-threaded or shutting down.
    fn drop(&mut self) {
        let (url, name) = (self.options.url.clone(), self.name().to_string());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime to drop the schema");
            runtime.block_on(async {
                let pool = PgPoolOptions::new().max_connections(1).connect(&url).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&pool).await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test schema {}: {e}", self.name()),
            Err(_) => eprintln!("could not drop the test schema {}", self.name()),
        }
    }
}
