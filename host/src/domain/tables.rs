//! The team's own tables (contract 0.3): the values a plugin writes, a declared table's shape
//! as PostgreSQL's catalog has it, which writes a route may make, and the check of a write
//! against the shape. No I/O: `db::tables` reads the catalog and writes the rows. Identifiers
//! a plugin names are only compared with the catalog's; its values become SQL parameters (as
//! text PostgreSQL casts to the column's type), never SQL.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A column's value, as a plugin wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TableValue {
    Null,
    Boolean(bool),
    Int(i64),
    Float(Float),
    Text(String),
    Bytes(#[serde(serialize_with = "hex_bytes")] Vec<u8>),
    /// JSON text.
    Json(String),
    /// RFC 3339 with its offset.
    Timestamp(String),
}

/// A float, equal to another when their bits are (two outputs are the same output when their
/// floats are the same floats).
#[derive(Debug, Clone, Copy)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Float {}

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

fn hex_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("\\x{}", hex::encode(bytes)))
}

impl TableValue {
    /// What kind of value it is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean(_) => "boolean",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Text(_) => "text",
            Self::Bytes(_) => "bytes",
            Self::Json(_) => "json",
            Self::Timestamp(_) => "timestamp",
        }
    }

    /// Bytes it holds, for the size limits.
    pub fn size(&self) -> usize {
        match self {
            Self::Null | Self::Boolean(_) => 1,
            Self::Int(_) | Self::Float(_) => 8,
            Self::Text(s) | Self::Json(s) | Self::Timestamp(s) => s.len(),
            Self::Bytes(b) => b.len(),
        }
    }
}

/// A column and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub column: String,
    pub value: TableValue,
}

impl Cell {
    pub fn new(column: impl Into<String>, value: TableValue) -> Self {
        Self {
            column: column.into(),
            value,
        }
    }
}

/// A kind of table write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableOp {
    Upsert,
    Delete,
    Add,
}

impl TableOp {
    pub const ALL: [Self; 3] = [Self::Upsert, Self::Delete, Self::Add];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
            Self::Add => "add",
        }
    }
}

/// Which writes a route may make to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOps {
    pub upsert: bool,
    pub delete: bool,
    pub add: bool,
}

impl TableOps {
    pub const ALL: Self = Self {
        upsert: true,
        delete: true,
        add: true,
    };

    pub const NONE: Self = Self {
        upsert: false,
        delete: false,
        add: false,
    };

    pub fn union(self, other: Self) -> Self {
        Self {
            upsert: self.upsert || other.upsert,
            delete: self.delete || other.delete,
            add: self.add || other.add,
        }
    }

    pub fn allows(self, op: TableOp) -> bool {
        match op {
            TableOp::Upsert => self.upsert,
            TableOp::Delete => self.delete,
            TableOp::Add => self.add,
        }
    }

    /// `upsert+delete+add`, any of them, in any order.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut ops = Self::NONE;
        for part in raw.split('+').map(str::trim) {
            match part {
                "upsert" => ops.upsert = true,
                "delete" => ops.delete = true,
                "add" => ops.add = true,
                other => {
                    return Err(format!(
                        "unknown table write `{other}`: upsert, delete or add, joined by `+`"
                    ));
                }
            }
        }
        Ok(ops)
    }
}

impl fmt::Display for TableOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<&str> = TableOp::ALL
            .into_iter()
            .filter(|op| self.allows(*op))
            .map(TableOp::as_str)
            .collect();
        f.write_str(&ops.join("+"))
    }
}

/// A column's type, as far as Sluice writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Numeric,
    Text,
    /// `varchar(n)`: at most `n` characters.
    Varchar(Option<usize>),
    /// `char(n)`.
    Char(Option<usize>),
    Bytea,
    Json,
    Jsonb,
    Timestamptz,
    Timestamp,
    Date,
    Uuid,
    /// A type Sluice does not write (its catalog name).
    Unsupported(String),
}

impl ColumnType {
    /// From the catalog: the type's name (`pg_type.typname`) and modifier (`atttypmod`).
    pub fn from_catalog(name: &str, typmod: i32) -> Self {
        // A varchar's or char's modifier is its length plus 4; -1 for none.
        let length = usize::try_from(typmod - 4).ok();
        match name {
            "bool" => Self::Boolean,
            "int2" => Self::SmallInt,
            "int4" => Self::Integer,
            "int8" => Self::BigInt,
            "float4" => Self::Real,
            "float8" => Self::Double,
            "numeric" => Self::Numeric,
            "text" => Self::Text,
            "varchar" => Self::Varchar(length),
            "bpchar" => Self::Char(length),
            "bytea" => Self::Bytea,
            "json" => Self::Json,
            "jsonb" => Self::Jsonb,
            "timestamptz" => Self::Timestamptz,
            "timestamp" => Self::Timestamp,
            "date" => Self::Date,
            "uuid" => Self::Uuid,
            other => Self::Unsupported(other.to_string()),
        }
    }

    /// The type a value's text is cast to in SQL.
    pub fn cast(&self) -> &str {
        match self {
            Self::Boolean => "bool",
            Self::SmallInt => "int2",
            Self::Integer => "int4",
            Self::BigInt => "int8",
            Self::Real => "float4",
            Self::Double => "float8",
            Self::Numeric => "numeric",
            Self::Text => "text",
            Self::Varchar(_) => "varchar",
            Self::Char(_) => "bpchar",
            Self::Bytea => "bytea",
            Self::Json => "json",
            Self::Jsonb => "jsonb",
            Self::Timestamptz => "timestamptz",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
            Self::Uuid => "uuid",
            Self::Unsupported(name) => name,
        }
    }

    /// Whether `add` may add to it.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Self::SmallInt
                | Self::Integer
                | Self::BigInt
                | Self::Real
                | Self::Double
                | Self::Numeric
        )
    }

    fn is_integer(&self) -> bool {
        matches!(self, Self::SmallInt | Self::Integer | Self::BigInt)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Varchar(Some(n)) => write!(f, "varchar({n})"),
            Self::Char(Some(n)) => write!(f, "char({n})"),
            other => f.write_str(other.cast()),
        }
    }
}

/// A column of a declared table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub not_null: bool,
    pub has_default: bool,
    /// A generated column: PostgreSQL computes it, nobody writes it.
    pub generated: bool,
}

/// A declared table's shape, from the catalog, under the name routes and plugins use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// As declared (`user_orders`, `sales.product_sales`).
    pub name: String,
    /// The catalog's schema and table names (what the SQL names, quoted).
    pub schema: String,
    pub table: String,
    /// In the table's column order.
    pub columns: Vec<Column>,
    /// The primary key's columns (indexes into `columns`), in the key's order.
    pub key: Vec<usize>,
}

/// A table write, by reference (see [`TableShape::check`]).
#[derive(Debug, Clone, Copy)]
pub enum TableWrite<'a> {
    Upsert(&'a [Cell]),
    Delete(&'a [Cell]),
    Add {
        key: &'a [Cell],
        column: &'a str,
        delta: &'a TableValue,
    },
}

impl TableShape {
    pub fn column(&self, name: &str) -> Option<(usize, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    pub fn is_key(&self, index: usize) -> bool {
        self.key.contains(&index)
    }

    /// Why Sluice cannot write this table at all, if it cannot: no primary key, a key column
    /// of a type it does not write, a column every insert must fill and Sluice cannot.
    pub fn check_writable(&self) -> Result<(), String> {
        if self.key.is_empty() {
            return Err(format!(
                "table {} has no primary key: upsert, delete and add find rows by it",
                self.name
            ));
        }
        for (index, column) in self.columns.iter().enumerate() {
            let ColumnType::Unsupported(ty) = &column.ty else {
                continue;
            };
            if self.is_key(index) {
                return Err(format!(
                    "table {}: key column {} is of type {ty}, which Sluice does not write",
                    self.name, column.name
                ));
            }
            if column.not_null && !column.has_default && !column.generated {
                return Err(format!(
                    "table {}: column {} is NOT NULL without a default and of type {ty}, which \
                     Sluice does not write: no row could be inserted",
                    self.name, column.name
                ));
            }
        }
        Ok(())
    }

    /// Why `write` does not fit the table, if it does not: a column it does not have or that
    /// is generated, a key not given whole, a value the column cannot take, an `add` to a
    /// column that is not a number.
    pub fn check(&self, write: TableWrite<'_>) -> Result<(), String> {
        match write {
            TableWrite::Upsert(row) => {
                self.cells(row)?;
                for &index in &self.key {
                    let column = &self.columns[index];
                    if !row.iter().any(|cell| cell.column == column.name) {
                        return Err(format!(
                            "upsert into {} without key column {}",
                            self.name, column.name
                        ));
                    }
                }
                Ok(())
            }
            TableWrite::Delete(key) => self.key_cells(key, "delete from"),
            TableWrite::Add { key, column, delta } => {
                self.key_cells(key, "add to")?;
                let (index, target) = self
                    .column(column)
                    .ok_or_else(|| format!("add to {}: it has no column {column:?}", self.name))?;
                if self.is_key(index) || target.generated || !target.ty.is_numeric() {
                    return Err(format!(
                        "add to {}.{}: a {} column{}; add needs a number that is not part of \
                         the key",
                        self.name,
                        target.name,
                        target.ty,
                        if target.generated { " (generated)" } else { "" }
                    ));
                }
                match delta {
                    TableValue::Int(_) => {}
                    TableValue::Float(_) if !target.ty.is_integer() => {}
                    other => {
                        return Err(format!(
                            "add to {}.{} ({}): a {} delta; an int{} is needed",
                            self.name,
                            target.name,
                            target.ty,
                            other.kind(),
                            if target.ty.is_integer() {
                                ""
                            } else {
                                " or a float"
                            }
                        ));
                    }
                }
                sql_text(self, target, delta).map(drop)
            }
        }
    }

    /// Every cell names a column once, one that may be written, with a value it can take.
    fn cells(&self, cells: &[Cell]) -> Result<(), String> {
        for (i, cell) in cells.iter().enumerate() {
            let (_, column) = self
                .column(&cell.column)
                .ok_or_else(|| format!("table {} has no column {:?}", self.name, cell.column))?;
            if column.generated {
                return Err(format!(
                    "{}.{} is a generated column: PostgreSQL computes it",
                    self.name, column.name
                ));
            }
            if cells[..i].iter().any(|c| c.column == cell.column) {
                return Err(format!(
                    "{}.{} is given twice in one write",
                    self.name, column.name
                ));
            }
            sql_text(self, column, &cell.value)?;
        }
        Ok(())
    }

    /// The cells name the key's columns, each once, none other.
    fn key_cells(&self, key: &[Cell], what: &str) -> Result<(), String> {
        self.cells(key)?;
        let names: Vec<&str> = self
            .key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        let given: Vec<&str> = key.iter().map(|c| c.column.as_str()).collect();
        if given.len() != names.len() || !names.iter().all(|n| given.contains(n)) {
            return Err(format!(
                "{what} {}: the key is {}, got {}",
                self.name,
                names.join(", "),
                if given.is_empty() {
                    "nothing".to_string()
                } else {
                    given.join(", ")
                }
            ));
        }
        Ok(())
    }
}

/// `value` for `column` of `table` as the text PostgreSQL casts to the column's type (`None`:
/// `NULL`), or why the column cannot take it.
pub fn sql_text(
    table: &TableShape,
    column: &Column,
    value: &TableValue,
) -> Result<Option<String>, String> {
    use ColumnType as T;
    use TableValue as V;
    let refuse = |why: &str| {
        Err(format!(
            "{}.{} ({}) cannot take {} value: {why}",
            table.name,
            column.name,
            column.ty,
            article(value.kind())
        ))
    };
    let text = match (&column.ty, value) {
        (_, V::Null) if column.not_null => {
            return Err(format!(
                "{}.{} is NOT NULL: it cannot be null",
                table.name, column.name
            ));
        }
        (_, V::Null) => return Ok(None),
        (T::Boolean, V::Boolean(b)) => if *b { "t" } else { "f" }.to_string(),
        (T::SmallInt, V::Int(i)) if i16::try_from(*i).is_err() => return refuse("out of range"),
        (T::Integer, V::Int(i)) if i32::try_from(*i).is_err() => return refuse("out of range"),
        (T::SmallInt | T::Integer | T::BigInt | T::Real | T::Double | T::Numeric, V::Int(i)) => {
            i.to_string()
        }
        (T::Real, V::Float(Float(f))) if f.is_finite() && f.abs() > f64::from(f32::MAX) => {
            return refuse("out of range");
        }
        (T::Real | T::Double | T::Numeric, V::Float(Float(f))) => float_text(*f),
        (T::Numeric, V::Text(s)) if is_decimal(s) => s.trim().to_string(),
        (T::Text | T::Varchar(_) | T::Char(_), V::Text(s)) => {
            if s.contains('\0') {
                return refuse("text cannot hold a NUL character");
            }
            if let T::Varchar(Some(n)) | T::Char(Some(n)) = &column.ty
                && s.chars().count() > *n
            {
                return refuse(&format!("longer than {n} characters"));
            }
            s.clone()
        }
        (T::Uuid, V::Text(s)) => match uuid::Uuid::parse_str(s) {
            Ok(id) => id.to_string(),
            Err(e) => return refuse(&format!("not a UUID: {e}")),
        },
        (T::Date, V::Text(s)) => match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(date) => date.to_string(),
            Err(e) => return refuse(&format!("not a date (YYYY-MM-DD): {e}")),
        },
        (T::Timestamptz | T::Timestamp, V::Timestamp(s) | V::Text(s)) => {
            match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(time) => time
                    .with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S%.f+00")
                    .to_string(),
                Err(e) => return refuse(&format!("not an RFC 3339 time: {e}")),
            }
        }
        (T::Bytea, V::Bytes(b)) => format!("\\x{}", hex::encode(b)),
        (T::Json | T::Jsonb, V::Json(s)) => {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(s) {
                return refuse(&format!("not JSON: {e}"));
            }
            if column.ty == T::Jsonb && s.contains("\\u0000") {
                return refuse("jsonb cannot hold \\u0000");
            }
            s.clone()
        }
        (T::Unsupported(_), _) => return refuse("Sluice does not write this type"),
        _ => return refuse("not a value of this type"),
    };
    Ok(Some(text))
}

fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// A float as PostgreSQL reads it back exactly.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:e}")
    }
}

/// A decimal number as `numeric` reads it: a sign, digits, a fraction, an exponent.
fn is_decimal(text: &str) -> bool {
    let s = text.trim();
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 4 && digits(e)
    });
    !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent_ok
        && s.len() <= 1000
}

/// Every declared table's shape, as the catalog was last read, and the order to write them in:
/// a table before those whose foreign keys point at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    pub shapes: Vec<Arc<TableShape>>,
}

impl Tables {
    /// In write order (parents first).
    pub fn new(shapes: Vec<Arc<TableShape>>) -> Self {
        Self { shapes }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<TableShape>> {
        self.shapes.iter().find(|s| s.name == name)
    }

    /// The place of `name` in write order.
    pub fn rank(&self, name: &str) -> usize {
        self.shapes
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX)
    }

    /// The route's grants with their shapes filled in.
    pub fn grant(&self, grants: &mut [TableGrant]) {
        for grant in grants {
            if let Some(shape) = self.get(&grant.name) {
                grant.shape = Some(Arc::clone(shape));
            }
        }
    }
}

/// What a batch writes to the declared tables, folded (`ingest::plan` folds, `db::tables`
/// writes).
#[derive(Debug, Default)]
pub struct TableWrites {
    /// Per table written, in write order (a table before those whose foreign keys point at it).
    pub tables: Vec<TableBatch>,
    /// Some writes could not be folded into one word per row (an `add` after an upsert of the
    /// same `numeric` column, an overflow): apply them record by record instead.
    pub sequential: bool,
    /// Writes by table and kind (metrics).
    pub counts: BTreeMap<(String, TableOp), u64>,
}

impl TableWrites {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// One table's rows in a batch: the last word per primary key.
#[derive(Debug)]
pub struct TableBatch {
    pub shape: Arc<TableShape>,
    /// Keys to delete first: the rows deleted, and those written again after a delete in the
    /// same batch (in the key's column order).
    pub deletes: Vec<Vec<TableValue>>,
    /// Rows to insert or update.
    pub merges: Vec<Merge>,
}

/// A row to insert, or to update where its key exists.
#[derive(Debug)]
pub struct Merge {
    /// In the key's column order.
    pub key: Vec<TableValue>,
    /// Columns set (by index in the table), each to its last value.
    pub set: BTreeMap<usize, TableValue>,
    /// Columns added to (by index), each by the sum of its deltas.
    pub add: BTreeMap<usize, TableValue>,
}

/// The route's declared tables: each one's name, the writes it allows, and its shape (when
/// the catalog has been read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableGrant {
    pub name: String,
    pub ops: TableOps,
    pub shape: Option<Arc<TableShape>>,
}

impl TableGrant {
    /// The name that stands for every table, written unchecked (`sluice plugin test`, which
    /// has no catalog to check against).
    pub const ANY: &str = "*";

    pub fn any() -> Self {
        Self {
            name: Self::ANY.to_string(),
            ops: TableOps::ALL,
            shape: None,
        }
    }
}

/// The limits on one message's table writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Writes (upserts, deletes, adds) one message may make.
    pub writes: usize,
    /// Bytes of one write's values.
    pub row_bytes: usize,
    /// Bytes of all of one message's writes' values.
    pub bytes: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        Self {
            writes: 64,
            row_bytes: 64 << 10,
            bytes: 1 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TableShape {
        let column = |name: &str, ty: ColumnType, not_null: bool| Column {
            name: name.into(),
            ty,
            not_null,
            has_default: false,
            generated: false,
        };
        TableShape {
            name: "sales".into(),
            schema: "public".into(),
            table: "sales".into(),
            columns: vec![
                column("product", ColumnType::Varchar(Some(8)), true),
                column("units", ColumnType::BigInt, true),
                column("revenue", ColumnType::Numeric, false),
                column("small", ColumnType::SmallInt, false),
                column("at", ColumnType::Timestamptz, false),
                column("doc", ColumnType::Jsonb, false),
                Column {
                    generated: true,
                    ..column("total", ColumnType::Numeric, false)
                },
            ],
            key: vec![0],
        }
    }

    fn cell(column: &str, value: TableValue) -> Cell {
        Cell::new(column, value)
    }

    fn text(s: &str) -> TableValue {
        TableValue::Text(s.into())
    }

    #[test]
    fn a_write_that_fits_passes_and_values_become_the_text_postgresql_casts() {
        let table = shape();
        let row = [
            cell("product", text("P-1")),
            cell("units", TableValue::Int(3)),
            cell("revenue", text("12.50")),
            cell(
                "at",
                TableValue::Timestamp("2026-12-07T19:30:00.5+01:00".into()),
            ),
            cell("doc", TableValue::Json(r#"{"a": [1, 2]}"#.into())),
        ];
        assert_eq!(table.check(TableWrite::Upsert(&row)), Ok(()));
        let at = &table.columns[4];
        assert_eq!(
            sql_text(&table, at, &row[3].value),
            Ok(Some("2026-12-07 18:30:00.500+00".into()))
        );
        let revenue = &table.columns[2];
        assert_eq!(
            sql_text(&table, revenue, &TableValue::Float(Float(0.1))),
            Ok(Some("1e-1".into()))
        );
        let add = TableWrite::Add {
            key: &row[..1],
            column: "revenue",
            delta: &TableValue::Float(Float(2.5)),
        };
        assert_eq!(table.check(add), Ok(()));
    }

    #[test]
    fn what_does_not_fit_is_refused_naming_the_table_and_column() {
        let table = shape();
        let key = [cell("product", text("P-1"))];
        let refusals: Vec<(Vec<Cell>, &str)> = vec![
            (
                vec![cell("units", TableValue::Int(1))],
                "without key column product",
            ),
            (
                vec![
                    cell("product", text("P-1")),
                    cell("nope", TableValue::Int(1)),
                ],
                "no column \"nope\"",
            ),
            (
                vec![
                    cell("product", text("P-1")),
                    cell("units", TableValue::Null),
                ],
                "sales.units is NOT NULL",
            ),
            (
                vec![cell("product", text("too long a name"))],
                "longer than 8",
            ),
            (
                vec![
                    cell("product", text("P")),
                    cell("small", TableValue::Int(70_000)),
                ],
                "out of range",
            ),
            (
                vec![cell("product", text("P")), cell("units", text("3"))],
                "sales.units (int8) cannot take a text value",
            ),
            (
                vec![cell("product", text("P")), cell("revenue", text("12,5"))],
                "sales.revenue (numeric) cannot take a text value",
            ),
            (
                vec![cell("product", text("P")), cell("at", text("yesterday"))],
                "not an RFC 3339 time",
            ),
            (
                vec![
                    cell("product", text("P")),
                    cell("doc", TableValue::Json("{".into())),
                ],
                "not JSON",
            ),
            (
                vec![
                    cell("product", text("P")),
                    cell("doc", TableValue::Json(r#""\u0000""#.into())),
                ],
                "\\u0000",
            ),
            (
                vec![
                    cell("product", text("P")),
                    cell("total", TableValue::Int(1)),
                ],
                "generated column",
            ),
            (
                vec![cell("product", text("P")), cell("product", text("Q"))],
                "given twice",
            ),
            (vec![cell("product", text("a\0b"))], "NUL"),
        ];
        for (row, words) in refusals {
            let refused = table.check(TableWrite::Upsert(&row)).unwrap_err();
            assert!(refused.contains(words), "{words}: {refused}");
        }
        let add = |column: &'static str, delta: TableValue| {
            table
                .check(TableWrite::Add {
                    key: &key,
                    column,
                    delta: &delta,
                })
                .unwrap_err()
        };
        assert!(add("units", TableValue::Float(Float(0.5))).contains("an int is needed"));
        assert!(add("product", TableValue::Int(1)).contains("not part of the key"));
        assert!(add("at", TableValue::Int(1)).contains("add needs a number"));
        let delete = table
            .check(TableWrite::Delete(&[cell("units", TableValue::Int(1))]))
            .unwrap_err();
        assert!(delete.contains("the key is product, got units"), "{delete}");
    }

    #[test]
    fn a_table_without_a_key_or_with_an_unwritable_required_column_is_refused() {
        let mut table = shape();
        assert_eq!(table.check_writable(), Ok(()));
        table.columns[3].ty = ColumnType::Unsupported("point".into());
        assert_eq!(
            table.check_writable(),
            Ok(()),
            "a nullable column it cannot write"
        );
        table.columns[3].not_null = true;
        assert!(
            table
                .check_writable()
                .unwrap_err()
                .contains("no row could be inserted")
        );
        table.key.clear();
        assert!(
            table
                .check_writable()
                .unwrap_err()
                .contains("no primary key")
        );
    }

    #[test]
    fn ops_parse_and_print() {
        assert_eq!(
            TableOps::parse("upsert+add").unwrap().to_string(),
            "upsert+add"
        );
        assert!(TableOps::parse("upsert+drop").is_err());
        assert!(TableOps::ALL.allows(TableOp::Delete));
    }

    #[test]
    fn decimals_are_what_numeric_reads() {
        for good in ["1", "-1.5", "+0.25", ".5", "5.", "1e10", "2.5E-3"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in ["", ".", "1,5", "1e", "abc", "1.2.3", "--1", "1e99999"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
