//! The team's declared tables: their shapes read from PostgreSQL's catalog (kept for ingest
//! and refreshed at every install), and a batch's writes to them: a few set-based statements
//! per table, or record by record (each in a savepoint) to find the record a constraint
//! refuses. The SQL names only the catalog's identifiers, quoted; every value is a parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use sqlx::{AssertSqlSafe, PgPool};

use super::Tx;
use crate::domain::Mutation;
use crate::domain::tables::{
    Column, ColumnType, Merge, TableOp, TableOps, TableShape, TableValue, TableWrites, Tables,
    sql_text,
};

/// The declared tables' shapes, as last read: shared by ingest (each batch takes the current
/// one) and the plugin control plane (which reads them again at every install).
#[derive(Debug, Default)]
pub struct Catalog {
    current: RwLock<Arc<Tables>>,
}

impl Catalog {
    pub fn current(&self) -> Arc<Tables> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Read every table of `declared` (name → the writes some route makes) from the catalog,
    /// check that Sluice can write it as declared, and keep the shapes. Nothing is kept when a
    /// table cannot be written: the error says which and why.
    pub async fn load(
        &self,
        pool: &PgPool,
        declared: &BTreeMap<String, TableOps>,
    ) -> anyhow::Result<()> {
        let mut shapes = Vec::with_capacity(declared.len());
        let mut oids = Vec::with_capacity(declared.len());
        for (name, ops) in declared {
            let (oid, shape) = read_shape(pool, name, *ops).await?;
            oids.push(oid);
            shapes.push(shape);
        }
        let order = write_order(pool, &oids).await?;
        let mut ordered: Vec<Arc<TableShape>> = Vec::with_capacity(shapes.len());
        for index in order {
            ordered.push(Arc::new(shapes[index].clone()));
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Tables::new(ordered));
        Ok(())
    }
}

/// A column as the catalog query reads it: number, name, type (a domain's base type), type
/// modifier, NOT NULL, has a default, generated, identity kind.
type CatalogColumn = (i16, String, String, i32, bool, bool, bool, String);

/// Table `name`'s oid and shape, after the checks: it exists, is a table, has a primary key
/// Sluice can write, and Sluice may make the writes `ops` declares.
async fn read_shape(pool: &PgPool, name: &str, ops: TableOps) -> anyhow::Result<(u32, TableShape)> {
    let found: Option<(sqlx::postgres::types::Oid, String, String, String)> = sqlx::query_as(
        "SELECT c.oid, n.nspname, c.relname, c.relkind::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = to_regclass($1)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some((oid, schema, table, kind)) = found else {
        anyhow::bail!("table {name} does not exist (Sluice never creates tables: create it first)");
    };
    anyhow::ensure!(
        kind == "r" || kind == "p",
        "{name} is not a table (relkind {kind}): Sluice writes ordinary and partitioned tables"
    );
    anyhow::ensure!(
        !(schema.starts_with("pg_") || schema == "information_schema"),
        "{name} is a table of PostgreSQL's own ({schema}.{table}): a plugin may not write it"
    );
    let own: Vec<sqlx::postgres::types::Oid> =
        sqlx::query_scalar::<_, Option<sqlx::postgres::types::Oid>>(
            "SELECT to_regclass(t)::oid FROM unnest($1::text[]) AS t",
        )
        .bind(sluice_tables())
        .fetch_all(pool)
        .await?
        .into_iter()
        .flatten()
        .collect();
    anyhow::ensure!(
        !own.contains(&oid),
        "{name} is one of Sluice's own tables ({schema}.{table}): a plugin may not write it"
    );
    let columns: Vec<CatalogColumn> = sqlx::query_as(
        "SELECT a.attnum, a.attname::text, COALESCE(base.typname, t.typname)::text,
                CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                a.attnotnull, a.atthasdef OR a.attidentity = 'd', a.attgenerated <> '',
                a.attidentity::text
         FROM pg_attribute a
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?;
    let key: Vec<i16> = sqlx::query_scalar(
        "SELECT k.attnum FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
         WHERE c.conrelid = $1 AND c.contype = 'p' ORDER BY k.i",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?;
    let shape = TableShape {
        name: name.to_string(),
        schema,
        table,
        key: key
            .iter()
            .filter_map(|attnum| columns.iter().position(|c| c.0 == *attnum))
            .collect(),
        columns: columns
            .into_iter()
            .map(
                |(_, name, ty, typmod, not_null, has_default, generated, identity)| Column {
                    name,
                    ty: ColumnType::from_catalog(&ty, typmod),
                    not_null,
                    has_default,
                    // An identity `ALWAYS` column takes no value either.
                    generated: generated || identity == "a",
                },
            )
            .collect(),
    };
    shape.check_writable().map_err(anyhow::Error::msg)?;
    let needed: Vec<&str> = [
        (ops.upsert || ops.add, "INSERT"),
        (ops.upsert || ops.add, "UPDATE"),
        (ops.delete, "DELETE"),
    ]
    .into_iter()
    .filter(|(needed, _)| *needed)
    .map(|(_, privilege)| privilege)
    .collect();
    for privilege in needed {
        let granted: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2)")
            .bind(oid)
            .bind(privilege)
            .fetch_one(pool)
            .await?;
        anyhow::ensure!(
            granted,
            "Sluice's database user may not {privilege} on {name}, and its route may {ops} it"
        );
    }
    Ok((oid.0, shape))
}

/// The order to write the tables in (indexes into `oids`): a table before the tables whose
/// foreign keys point at it; the rest in the order given.
async fn write_order(pool: &PgPool, oids: &[u32]) -> sqlx::Result<Vec<usize>> {
    let oid_values: Vec<sqlx::postgres::types::Oid> = oids
        .iter()
        .map(|o| sqlx::postgres::types::Oid(*o))
        .collect();
    let references: Vec<(sqlx::postgres::types::Oid, sqlx::postgres::types::Oid)> = sqlx::query_as(
        "SELECT conrelid, confrelid FROM pg_constraint
         WHERE contype = 'f' AND conrelid = ANY($1) AND confrelid = ANY($1)
           AND conrelid <> confrelid",
    )
    .bind(&oid_values)
    .fetch_all(pool)
    .await?;
    let index = |oid: u32| oids.iter().position(|o| *o == oid);
    // Kahn's algorithm; a cycle leaves its tables in the given order.
    let mut parents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); oids.len()];
    for (child, parent) in references {
        if let (Some(c), Some(p)) = (index(child.0), index(parent.0)) {
            parents[c].insert(p);
        }
    }
    let mut order = Vec::with_capacity(oids.len());
    let mut placed = vec![false; oids.len()];
    while order.len() < oids.len() {
        let next = (0..oids.len())
            .find(|&i| !placed[i] && parents[i].iter().all(|&p| placed[p]))
            .or_else(|| (0..oids.len()).find(|&i| !placed[i]));
        let Some(next) = next else { break };
        placed[next] = true;
        order.push(next);
    }
    Ok(order)
}

/// What writing a batch's table rows came to.
#[derive(Debug)]
pub enum Written {
    /// Every write is in the transaction.
    Done,
    /// PostgreSQL refused the writes of these records (place → its message); nothing of the
    /// batch's table writes is in the transaction: decide again without them.
    Refused(Vec<((i32, i64), String)>),
}

/// Why a statement did not go in: the table refused it (a constraint, a value), or something
/// that is not the record's doing (the connection, a deadlock: the caller's to retry).
enum Failure {
    Refused(String),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => {
                // Transaction rollback (serialization, deadlock), resources, operator action
                // and connection classes are not the record's doing.
                let retried = db.code().is_some_and(|code| {
                    ["40", "53", "57", "08", "58", "XX"]
                        .iter()
                        .any(|class| code.starts_with(class))
                });
                if retried {
                    Self::Sql(e)
                } else {
                    Self::Refused(db.message().to_string())
                }
            }
            _ => Self::Sql(e),
        }
    }
}

/// Write a batch's table rows in the caller's transaction: the folded rows in a few statements
/// per table; if PostgreSQL refuses them (or they could not be folded), each applied record's
/// writes in offset order, each record in a savepoint of its own, to find the records it
/// refuses. A failure that is not a refusal (the connection, a deadlock) is the caller's.
pub async fn write(
    tx: &mut Tx<'_>,
    folded: &TableWrites,
    records: &[((i32, i64), &[Mutation])],
    tables: &Tables,
) -> sqlx::Result<Written> {
    if folded.is_empty() {
        return Ok(Written::Done);
    }
    // A deferred constraint is checked at each statement, where the record is known, not at
    // the commit, where the whole batch would fail.
    execute(tx, "SET CONSTRAINTS ALL IMMEDIATE").await?;
    execute(tx, "SAVEPOINT sluice_tables").await?;
    if !folded.sequential {
        match write_folded(tx, folded).await {
            Ok(()) => {
                execute(tx, "RELEASE SAVEPOINT sluice_tables").await?;
                return Ok(Written::Done);
            }
            Err(Failure::Sql(e)) => return Err(e),
            Err(Failure::Refused(why)) => {
                tracing::debug!(%why, "the batch's folded table writes were refused; writing record by record");
                execute(tx, "ROLLBACK TO SAVEPOINT sluice_tables").await?;
            }
        }
    }
    let mut refused = Vec::new();
    for (place, mutations) in records {
        execute(tx, "SAVEPOINT sluice_record").await?;
        match write_record(tx, tables, mutations).await {
            Ok(()) => execute(tx, "RELEASE SAVEPOINT sluice_record").await?,
            Err(Failure::Sql(e)) => return Err(e),
            Err(Failure::Refused(why)) => {
                execute(tx, "ROLLBACK TO SAVEPOINT sluice_record").await?;
                refused.push((*place, why));
            }
        }
    }
    if refused.is_empty() {
        // Record by record, in order, every write went in (the folded statements ran into
        // something only the order of the records settles): they stand.
        execute(tx, "RELEASE SAVEPOINT sluice_tables").await?;
        return Ok(Written::Done);
    }
    execute(tx, "ROLLBACK TO SAVEPOINT sluice_tables").await?;
    execute(tx, "RELEASE SAVEPOINT sluice_tables").await?;
    Ok(Written::Refused(refused))
}

async fn execute(tx: &mut Tx<'_>, sql: &'static str) -> sqlx::Result<()> {
    sqlx::query(sql).execute(&mut **tx).await.map(drop)
}

/// The folded rows: deletes children first, then inserts and updates parents first.
async fn write_folded(tx: &mut Tx<'_>, folded: &TableWrites) -> Result<(), Failure> {
    for batch in folded.tables.iter().rev() {
        delete(tx, &batch.shape, &batch.deletes).await?;
    }
    for batch in &folded.tables {
        // One statement per set of columns written.
        let mut shapes: BTreeMap<(Vec<usize>, Vec<usize>), Vec<&Merge>> = BTreeMap::new();
        for merge in &batch.merges {
            let set = merge.set.keys().copied().collect();
            let add = merge.add.keys().copied().collect();
            shapes.entry((set, add)).or_default().push(merge);
        }
        for ((set, add), rows) in shapes {
            upsert(tx, &batch.shape, (&set, &add), &rows).await?;
        }
    }
    Ok(())
}

/// One record's writes, in their order.
async fn write_record(
    tx: &mut Tx<'_>,
    tables: &Tables,
    mutations: &[Mutation],
) -> Result<(), Failure> {
    for mutation in mutations {
        let Some((table, op, _)) = mutation.table_write() else {
            continue;
        };
        let shape = tables
            .get(table)
            .ok_or_else(|| Failure::Refused(format!("table {table} is no longer declared")))?;
        let (key_cells, set, add): (_, BTreeMap<usize, TableValue>, BTreeMap<usize, TableValue>) =
            match mutation {
                Mutation::Upsert { row, .. } => {
                    let set = row
                        .iter()
                        .filter_map(|c| shape.column(&c.column).map(|(i, _)| (i, c.value.clone())))
                        .filter(|(i, _)| !shape.is_key(*i))
                        .collect();
                    (row.as_slice(), set, BTreeMap::new())
                }
                Mutation::Delete { key, .. } => (key.as_slice(), BTreeMap::new(), BTreeMap::new()),
                Mutation::Add {
                    key, column, delta, ..
                } => {
                    let index = shape.column(column).map(|(i, _)| i).ok_or_else(|| {
                        Failure::Refused(format!("{table} has no column {column:?}"))
                    })?;
                    (
                        key.as_slice(),
                        BTreeMap::new(),
                        BTreeMap::from([(index, delta.clone())]),
                    )
                }
                _ => continue,
            };
        let key = shape
            .key
            .iter()
            .map(|&i| {
                let name = &shape.columns[i].name;
                key_cells
                    .iter()
                    .find(|c| &c.column == name)
                    .map(|c| c.value.clone())
                    .ok_or_else(|| Failure::Refused(format!("{table}: key column {name} missing")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match op {
            TableOp::Delete => delete(tx, shape, &[key]).await?,
            TableOp::Upsert | TableOp::Add => {
                let merge = Merge { key, set, add };
                let columns: (Vec<usize>, Vec<usize>) = (
                    merge.set.keys().copied().collect(),
                    merge.add.keys().copied().collect(),
                );
                upsert(tx, shape, (&columns.0, &columns.1), &[&merge]).await?;
            }
        }
    }
    Ok(())
}

/// `"name"`, quoted for SQL (a catalog name; never a plugin's).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn table_name(shape: &TableShape) -> String {
    format!("{}.{}", quote(&shape.schema), quote(&shape.table))
}

/// The values of `column` for each row, as the text PostgreSQL casts.
fn texts<'a>(
    shape: &TableShape,
    column: usize,
    values: impl Iterator<Item = Option<&'a TableValue>>,
) -> Result<Vec<Option<String>>, Failure> {
    let column = &shape.columns[column];
    values
        .map(|value| match value {
            None => Ok(None),
            Some(value) => sql_text(shape, column, value).map_err(Failure::Refused),
        })
        .collect()
}

/// Delete the rows with these keys (in the key's column order).
async fn delete(
    tx: &mut Tx<'_>,
    shape: &TableShape,
    keys: &[Vec<TableValue>],
) -> Result<(), Failure> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut sql = format!("DELETE FROM {} AS t USING UNNEST(", table_name(shape));
    let arrays: Vec<String> = (1..=shape.key.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..shape.key.len()).map(|i| format!("k{i}")).collect();
    let matches: Vec<String> = shape
        .key
        .iter()
        .enumerate()
        .map(|(i, &column)| {
            let column = &shape.columns[column];
            format!("t.{} = u.k{i}::{}", quote(&column.name), column.ty.cast())
        })
        .collect();
    sql.push_str(&format!(
        "{}) AS u({}) WHERE {}",
        arrays.join(", "),
        aliases.join(", "),
        matches.join(" AND ")
    ));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (i, &column) in shape.key.iter().enumerate() {
        query = query.bind(texts(shape, column, keys.iter().map(|key| key.get(i)))?);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Insert `rows` (all setting the columns `set` and adding to `add`), or update the rows whose
/// key exists: set columns take their values, added ones grow by theirs (from 0 where null).
async fn upsert(
    tx: &mut Tx<'_>,
    shape: &TableShape,
    (set, add): (&[usize], &[usize]),
    rows: &[&Merge],
) -> Result<(), Failure> {
    let columns: Vec<usize> = shape.key.iter().chain(set).chain(add).copied().collect();
    let names: Vec<String> = columns
        .iter()
        .map(|&c| quote(&shape.columns[c].name))
        .collect();
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, &c)| format!("u.c{i}::{}", shape.columns[c].ty.cast()))
        .collect();
    let keys: Vec<String> = shape
        .key
        .iter()
        .map(|&c| quote(&shape.columns[c].name))
        .collect();
    let updates: Vec<String> = set
        .iter()
        .map(|&c| {
            let name = quote(&shape.columns[c].name);
            format!("{name} = EXCLUDED.{name}")
        })
        .chain(add.iter().map(|&c| {
            let name = quote(&shape.columns[c].name);
            format!("{name} = COALESCE(t.{name}, 0) + EXCLUDED.{name}")
        }))
        .collect();
    let on_conflict = if updates.is_empty() {
        format!("ON CONFLICT ({}) DO NOTHING", keys.join(", "))
    } else {
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            keys.join(", "),
            updates.join(", ")
        )
    };
    let sql = format!(
        "INSERT INTO {} AS t ({}) SELECT {} FROM UNNEST({}) AS u({}) {on_conflict}",
        table_name(shape),
        names.join(", "),
        values.join(", "),
        arrays.join(", "),
        aliases.join(", "),
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (i, _) in shape.key.iter().enumerate() {
        let column = shape.key[i];
        query = query.bind(texts(shape, column, rows.iter().map(|r| r.key.get(i)))?);
    }
    for &column in set {
        query = query.bind(texts(
            shape,
            column,
            rows.iter().map(|r| r.set.get(&column)),
        )?);
    }
    for &column in add {
        query = query.bind(texts(
            shape,
            column,
            rows.iter().map(|r| r.add.get(&column)),
        )?);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// The tables Sluice's migrations create (its bookkeeping, the catalog, the outbox): never
/// a plugin's to write.
fn sluice_tables() -> Vec<String> {
    let mut tables: Vec<String> = super::MIGRATOR
        .iter()
        .flat_map(|m| {
            let sql = m.sql.as_str().to_ascii_lowercase();
            sql.split("create table ")
                .skip(1)
                .filter_map(|rest| {
                    let rest = rest
                        .trim_start()
                        .trim_start_matches("if not exists ")
                        .trim_start();
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                        .collect();
                    (!name.is_empty()).then_some(name)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

#[cfg(test)]
mod tests {
    #[test]
    fn sluice_s_own_tables_are_read_from_its_migrations() {
        let own = super::sluice_tables();
        for table in [
            "catalog",
            "outbox",
            "processed_records",
            "consumer_positions",
            "plugin_state",
        ] {
            assert!(own.iter().any(|t| t == table), "{table} in {own:?}");
        }
    }
}
