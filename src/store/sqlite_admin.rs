//! The management plane's tables in SQLite.

use super::admin_tables::admin_tables;
use super::SqliteStore;

admin_tables!(
    store = SqliteStore,
    db = sqlx::Sqlite,
    row = sqlx::sqlite::SqliteRow,
    conn = sqlx::SqliteConnection,
    overriding = "",
    after_import = nothing_after_import
);

/// SQLite takes the next id after the largest by itself.
async fn nothing_after_import(_: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    Ok(())
}
