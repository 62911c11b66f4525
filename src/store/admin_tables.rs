//! The management plane's tables and the phone and email factors, one
//! implementation for both backends:
//! the statements are the same text (SQLite takes `$1`-style parameters
//! too), the macro fills in the backend's types.

/// Implements [`super::AdminStore`], [`super::AuditStore`] and
/// [`super::OobStore`] for a backend, and defines its `export_admin` and
/// `import_admin` (the rows of these tables in a snapshot).
/// `overriding` is what an insert with explicit ids needs;
/// `after_import` runs after the rows of a snapshot are written.
macro_rules! admin_tables {
    (
        store = $store:ty,
        db = $db:ty,
        row = $row:ty,
        conn = $conn:ty,
        overriding = $overriding:literal,
        after_import = $after_import:path
    ) => {
        use async_trait::async_trait;
        use sqlx::Row;

        use super::admin::{audit_select, json_list, parse_json_list, AUDIT_COLUMNS, MFA_TABLES};
        use super::{
            AdminStore, AdminTokenRow, AuditQuery, AuditRow, AuditStore, MfaReset, OobRow, OobStore, Snapshot, StoreError, TicketRow,
        };

        const OOB_COLUMNS: &str = "id, username, channel, destination, name, created, last_used";

        fn oob_row(r: &$row) -> OobRow {
            OobRow {
                id: r.get(0),
                username: r.get(1),
                channel: r.get(2),
                destination: r.get(3),
                name: r.get(4),
                created: r.get(5),
                last_used: r.get(6),
            }
        }

        /// Binds an out-of-band factor's columns after its id, in the table's order.
        fn bind_oob<'q>(query: Query<'q>, row: &'q OobRow) -> Query<'q> {
            query.bind(&row.username).bind(&row.channel).bind(&row.destination).bind(&row.name).bind(row.created).bind(row.last_used)
        }

        #[async_trait]
        impl OobStore for $store {
            async fn oob_factors(&self, username: &str) -> Result<Vec<OobRow>, StoreError> {
                let query = format!("SELECT {OOB_COLUMNS} FROM oob_factors WHERE username = $1 ORDER BY id");
                Ok(sqlx::query(&query).bind(username).fetch_all(&self.pool).await?.iter().map(oob_row).collect())
            }

            async fn insert_oob(&self, row: &OobRow) -> Result<Option<i64>, StoreError> {
                let insert = "INSERT INTO oob_factors (username, channel, destination, name, created, last_used)
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username, channel, destination) DO NOTHING RETURNING id";
                Ok(bind_oob(sqlx::query(insert), row).fetch_optional(&self.pool).await?.map(|r| r.get(0)))
            }

            async fn rename_oob(&self, username: &str, id: i64, name: &str) -> Result<bool, StoreError> {
                let update = "UPDATE oob_factors SET name = $1 WHERE username = $2 AND id = $3";
                Ok(sqlx::query(update).bind(name).bind(username).bind(id).execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn touch_oob(&self, id: i64, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE oob_factors SET last_used = $1 WHERE id = $2").bind(now).bind(id).execute(&self.pool).await?;
                Ok(())
            }
        }

        const TOKEN_COLUMNS: &str = "name, hash, scopes, groups, created, expires, last_used";

        /// A token read with [`TOKEN_COLUMNS`]; None if its hash is not 32 bytes.
        fn token_row(r: &$row) -> Option<AdminTokenRow> {
            let hash: Vec<u8> = r.get(1);
            Some(AdminTokenRow {
                name: r.get(0),
                hash: hash.try_into().ok()?,
                scopes: parse_json_list(r.get(2)),
                groups: parse_json_list(r.get(3)),
                created: r.get(4),
                expires: r.get(5),
                last_used: r.get(6),
            })
        }

        const TICKET_COLUMNS: &str = "id, username, hash, created, expires, used_at, created_by";

        /// A ticket read with [`TICKET_COLUMNS`]; None if its hash is not 32 bytes.
        fn ticket_row(r: &$row) -> Option<TicketRow> {
            let hash: Vec<u8> = r.get(2);
            Some(TicketRow {
                id: r.get(0),
                username: r.get(1),
                hash: hash.try_into().ok()?,
                created: r.get(3),
                expires: r.get(4),
                used_at: r.get(5),
                created_by: r.get(6),
            })
        }

        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;

        /// Stores a token unless one of its name exists.
        fn insert_token(row: &AdminTokenRow) -> Query<'_> {
            sqlx::query(
                "INSERT INTO admin_tokens (name, hash, scopes, groups, created, expires, last_used) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO NOTHING",
            )
            .bind(&row.name)
            .bind(&row.hash[..])
            .bind(json_list(&row.scopes))
            .bind(json_list(&row.groups))
            .bind(row.created)
            .bind(row.expires)
            .bind(row.last_used)
        }

        /// Binds a ticket's columns after its id, in the table's order.
        fn bind_ticket<'q>(query: Query<'q>, row: &'q TicketRow) -> Query<'q> {
            query.bind(&row.username).bind(&row.hash[..]).bind(row.created).bind(row.expires).bind(row.used_at).bind(&row.created_by)
        }

        /// Binds an event's columns after its id, in the table's order.
        fn bind_event<'q>(query: Query<'q>, row: &'q AuditRow) -> Query<'q> {
            query
                .bind(row.at)
                .bind(&row.kind)
                .bind(&row.username)
                .bind(&row.actor)
                .bind(&row.ip)
                .bind(&row.country)
                .bind(&row.app)
                .bind(&row.outcome)
                .bind(&row.details)
        }

        fn audit_row(r: &$row) -> AuditRow {
            AuditRow {
                id: r.get(0),
                at: r.get(1),
                kind: r.get(2),
                username: r.get(3),
                actor: r.get(4),
                ip: r.get(5),
                country: r.get(6),
                app: r.get(7),
                outcome: r.get(8),
                details: r.get(9),
            }
        }

        #[async_trait]
        impl AdminStore for $store {
            async fn insert_admin_token(&self, row: &AdminTokenRow) -> Result<bool, StoreError> {
                let inserted = insert_token(row).execute(&self.pool).await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn admin_token(&self, hash: &[u8; 32]) -> Result<Option<AdminTokenRow>, StoreError> {
                let query = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE hash = $1");
                let row = sqlx::query(&query).bind(&hash[..]).fetch_optional(&self.pool).await?;
                Ok(row.as_ref().and_then(token_row))
            }

            async fn admin_tokens(&self) -> Result<Vec<AdminTokenRow>, StoreError> {
                let query = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY name");
                let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
                Ok(rows.iter().filter_map(token_row).collect())
            }

            async fn revoke_admin_token(&self, name: &str) -> Result<bool, StoreError> {
                let deleted = sqlx::query("DELETE FROM admin_tokens WHERE name = $1").bind(name).execute(&self.pool).await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn touch_admin_token(&self, name: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE admin_tokens SET last_used = $1 WHERE name = $2").bind(now).bind(name).execute(&self.pool).await?;
                Ok(())
            }

            async fn reset_mfa(&self, username: &str) -> Result<MfaReset, StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut deleted = [0u64; MFA_TABLES.len()];
                for (count, table) in deleted.iter_mut().zip(MFA_TABLES) {
                    let query = format!("DELETE FROM {table} WHERE username = $1");
                    *count = sqlx::query(&query).bind(username).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                let [totp, webauthn, oob, recovery_codes, browsers, sessions] = deleted;
                Ok(MfaReset { factors: totp + webauthn + oob, recovery_codes, browsers, sessions })
            }

            async fn insert_ticket(&self, row: &TicketRow) -> Result<i64, StoreError> {
                let insert = "INSERT INTO enrolment_tickets (username, hash, created, expires, used_at, created_by)
                      VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
                Ok(bind_ticket(sqlx::query(insert), row).fetch_one(&self.pool).await?.get(0))
            }

            async fn claim_ticket(&self, hash: &[u8; 32], username: &str, now: i64) -> Result<bool, StoreError> {
                let claimed = sqlx::query(
                    "UPDATE enrolment_tickets SET used_at = $1 WHERE hash = $2 AND username = $3 AND used_at IS NULL AND expires > $4",
                )
                .bind(now)
                .bind(&hash[..])
                .bind(username)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(claimed.rows_affected() == 1)
            }

            async fn tickets_of(&self, username: &str) -> Result<Vec<TicketRow>, StoreError> {
                let query = format!("SELECT {TICKET_COLUMNS} FROM enrolment_tickets WHERE username = $1 ORDER BY id DESC");
                let rows = sqlx::query(&query).bind(username).fetch_all(&self.pool).await?;
                Ok(rows.iter().filter_map(ticket_row).collect())
            }

            async fn revoke_ticket(&self, username: &str, id: i64) -> Result<bool, StoreError> {
                let deleted = sqlx::query("DELETE FROM enrolment_tickets WHERE username = $1 AND id = $2")
                    .bind(username)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn count_sessions(&self, seen_since: i64) -> Result<u64, StoreError> {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE last_seen >= $1")
                    .bind(seen_since)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }

            async fn delete_sessions_of(&self, username: &str) -> Result<u64, StoreError> {
                let deleted = sqlx::query("DELETE FROM sessions WHERE username = $1").bind(username).execute(&self.pool).await?;
                Ok(deleted.rows_affected())
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn record_audit(&self, row: &AuditRow) -> Result<i64, StoreError> {
                let insert = "INSERT INTO audit_events (at, kind, username, actor, ip, country, app, outcome, details)
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
                Ok(bind_event(sqlx::query(insert), row).fetch_one(&self.pool).await?.get(0))
            }

            async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
                let mut select = audit_select::<$db>(query);
                let rows = select.build().fetch_all(&self.pool).await?;
                Ok(rows.iter().map(audit_row).collect())
            }

            async fn forget_audit_before(&self, before: i64) -> Result<u64, StoreError> {
                let deleted = sqlx::query("DELETE FROM audit_events WHERE at < $1").bind(before).execute(&self.pool).await?;
                Ok(deleted.rows_affected())
            }
        }

        /// The management plane's rows, for a snapshot.
        #[allow(clippy::type_complexity)]
        pub(super) async fn export_admin(
            conn: &mut $conn,
        ) -> Result<(Vec<AdminTokenRow>, Vec<TicketRow>, Vec<AuditRow>, Vec<OobRow>), StoreError> {
            let tokens = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY name")).fetch_all(&mut *conn).await?;
            let tickets = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM enrolment_tickets ORDER BY id")).fetch_all(&mut *conn).await?;
            let audit = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY id")).fetch_all(&mut *conn).await?;
            let oob = sqlx::query(&format!("SELECT {OOB_COLUMNS} FROM oob_factors ORDER BY id")).fetch_all(&mut *conn).await?;
            Ok((
                tokens.iter().filter_map(token_row).collect(),
                tickets.iter().filter_map(ticket_row).collect(),
                audit.iter().map(audit_row).collect(),
                oob.iter().map(oob_row).collect(),
            ))
        }

        /// Writes a snapshot's management rows into emptied tables, ids kept.
        pub(super) async fn import_admin(conn: &mut $conn, snapshot: &Snapshot) -> Result<(), StoreError> {
            for row in &snapshot.admin_tokens {
                insert_token(row).execute(&mut *conn).await?;
            }
            let insert_ticket = concat!(
                "INSERT INTO enrolment_tickets (id, username, hash, created, expires, used_at, created_by)",
                $overriding,
                " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            );
            for row in &snapshot.tickets {
                bind_ticket(sqlx::query(insert_ticket).bind(row.id), row).execute(&mut *conn).await?;
            }
            let insert_event = concat!(
                "INSERT INTO audit_events (id, at, kind, username, actor, ip, country, app, outcome, details)",
                $overriding,
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            );
            for row in &snapshot.audit {
                bind_event(sqlx::query(insert_event).bind(row.id), row).execute(&mut *conn).await?;
            }
            let insert_oob = concat!(
                "INSERT INTO oob_factors (id, username, channel, destination, name, created, last_used)",
                $overriding,
                " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            );
            for row in &snapshot.oob {
                bind_oob(sqlx::query(insert_oob).bind(row.id), row).execute(&mut *conn).await?;
            }
            $after_import(&mut *conn).await?;
            Ok(())
        }
    };
}

pub(super) use admin_tables;
