//! The management plane's tables in PostgreSQL.

use super::admin_tables::admin_tables;
use super::PostgresStore;

admin_tables!(
    store = PostgresStore,
    db = sqlx::Postgres,
    row = sqlx::postgres::PgRow,
    conn = sqlx::PgConnection,
    overriding = " OVERRIDING SYSTEM VALUE",
    after_import = restart_identities
);

/// Ids copied in explicitly: new rows must be numbered after them.
async fn restart_identities(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    for table in ["enrolment_tickets", "audit_events", "oob_factors"] {
        let query = format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}");
        sqlx::query(&query).execute(&mut *conn).await?;
    }
    Ok(())
}
