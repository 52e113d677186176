//! The `pg_catalog` schema as installed: the catalog crate's tables, with
//! array-typed columns made arrays, PostgreSQL 16 columns the crate lacks
//! added, the stored roles, and `oid` planned as an unsigned 32-bit number.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::oid_field::OID_ALIAS_KEY;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;

use crate::error::{Result, SqlError};
use crate::session::USER;

/// Names of the catalog's columns of type `oid` (and its aliases).
pub(super) async fn oid_columns(ctx: &SessionContext, catalog: &str) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    let Some(schema) = ctx.catalog(catalog).and_then(|c| c.schema("pg_catalog")) else {
        return Ok(out);
    };
    for name in schema.table_names() {
        if let Some(t) = schema.table(&name).await? {
            for f in t.schema().fields() {
                if f.metadata().contains_key(OID_ALIAS_KEY) {
                    out.insert(f.name().clone());
                }
            }
        }
    }
    Ok(out)
}

/// Columns PostgreSQL types as arrays (`int2vector`, `oidvector`, `int2[]`)
/// that the bundled catalog rows hold as text; clients `unnest` them.
const ARRAY_COLUMNS: &[(&str, &[(&str, DataType)])] = &[
    (
        "pg_index",
        &[
            ("indkey", DataType::Int16),
            ("indclass", DataType::Int32),
            ("indoption", DataType::Int16),
            ("indcollation", DataType::Int32),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("conkey", DataType::Int16),
            ("confkey", DataType::Int16),
            ("conpfeqop", DataType::Int32),
            ("conppeqop", DataType::Int32),
            ("conffeqop", DataType::Int32),
            ("conexclop", DataType::Int32),
        ],
    ),
];

/// PostgreSQL 16 columns the bundled tables lack, always NULL here
/// (`pg_class.relacl` is added too, from the privileges: see
/// `super::privileges`).
const MISSING_COLUMNS: &[(&str, &[(&str, DataType)])] = &[
    ("pg_class", &[("reloptions", DataType::Utf8)]),
    ("pg_attribute", &[]),
    ("pg_policy", &[]),
];

/// Array columns the bundled tables type as text and are always NULL
/// here: NULL arrays (of this item type), so that array functions over
/// them plan, as psql's `\dp` needs (there are no column privileges and
/// no row-security policies).
const NULL_ARRAY_COLUMNS: &[(&str, &str, DataType)] = &[
    ("pg_attribute", "attacl", DataType::Utf8),
    ("pg_policy", "polroles", DataType::Int32),
];

/// The names of the catalog's columns that are arrays of numbers.
pub(super) fn number_array_columns() -> HashSet<String> {
    let arrays = ARRAY_COLUMNS
        .iter()
        .flat_map(|(_, cols)| cols.iter().map(|(c, _)| c.to_string()));
    let nulls = NULL_ARRAY_COLUMNS
        .iter()
        .filter(|(_, _, t)| t.is_integer())
        .map(|(_, c, _)| c.to_string());
    arrays.chain(nulls).collect()
}

/// Replaces `pg_catalog` with a schema in which the [`ARRAY_COLUMNS`] are
/// arrays of numbers (the tables are fixed rows, converted once).
pub(super) async fn with_array_columns(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let cat = ctx
        .catalog(catalog)
        .ok_or_else(|| SqlError::Internal(format!("no catalog {catalog}")))?;
    let inner = cat
        .schema("pg_catalog")
        .ok_or_else(|| SqlError::Internal("no pg_catalog schema".into()))?;
    let mut overrides = HashMap::new();
    for (table, columns) in ARRAY_COLUMNS {
        let Some(provider) = inner.table(table).await? else {
            continue;
        };
        let batches = ctx.read_table(provider)?.collect().await?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| SqlError::Internal(format!("{table}: no rows")))?;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match columns.iter().find(|(c, _)| c == f.name()) {
                Some((_, t)) if f.data_type() == &DataType::Utf8 => {
                    Field::new(f.name(), DataType::new_list(t.clone(), true), true)
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let converted = Arc::new(Schema::new(fields));
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let cols = b
                .columns()
                .iter()
                .zip(converted.fields())
                .map(|(c, f)| match f.data_type() {
                    DataType::List(item) if c.data_type() == &DataType::Utf8 => {
                        numbers_list(c.as_string::<i32>(), item.data_type())
                    }
                    _ => Ok(c.clone()),
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(RecordBatch::try_new(converted.clone(), cols)?);
        }
        let mem = MemTable::try_new(converted, vec![out])?;
        overrides.insert(table.to_string(), Arc::new(mem) as Arc<dyn TableProvider>);
    }
    for (table, columns) in MISSING_COLUMNS {
        let Some(provider) = inner.table(table).await? else {
            continue;
        };
        let mut exprs: Vec<datafusion::prelude::Expr> = provider
            .schema()
            .fields()
            .iter()
            .map(|f| {
                if let Some((_, _, item)) = NULL_ARRAY_COLUMNS
                    .iter()
                    .find(|(t, c, _)| t == table && c == f.name())
                {
                    let list = DataType::new_list(item.clone(), true);
                    return Ok(
                        datafusion::prelude::lit(ScalarValue::try_from(&list)?).alias(f.name())
                    );
                }
                Ok(datafusion::prelude::col(
                    datafusion::common::Column::new_unqualified(f.name()),
                ))
            })
            .collect::<Result<_>>()?;
        for (name, t) in *columns {
            let null = ScalarValue::try_from(t)?;
            exprs.push(datafusion::prelude::lit(null).alias(*name));
        }
        if *table == "pg_class" {
            let relacl =
                datafusion::execution::FunctionRegistry::udf(ctx, super::privileges::RELACL)?;
            exprs.push(
                relacl
                    .call(vec![datafusion::prelude::col("relname")])
                    .alias("relacl"),
            );
        }
        let plan = LogicalPlanBuilder::scan(*table, provider_as_source(provider), None)?
            .project(exprs)?
            .build()?;
        let view = ViewTable::new(plan, None);
        overrides.insert(table.to_string(), Arc::new(view) as Arc<dyn TableProvider>);
    }
    // `pg_user`: PostgreSQL's view of the roles that may log in.
    let plan = ctx.state().create_logical_plan(PG_USER).await?;
    overrides.insert(
        "pg_user".to_string(),
        Arc::new(ViewTable::new(plan, None)) as Arc<dyn TableProvider>,
    );
    cat.register_schema("pg_catalog", Arc::new(Overridden { inner, overrides }))?;
    Ok(())
}

/// `"1 2"` (a vector's text) or `"{1,2}"` (an array's) as a list of numbers.
fn numbers_list(text: &StringArray, item: &DataType) -> Result<ArrayRef> {
    let mut values: Vec<ScalarValue> = Vec::new();
    let mut lists = Vec::with_capacity(text.len());
    for v in text.iter() {
        let Some(v) = v else {
            lists.push(None);
            continue;
        };
        values.clear();
        for n in v
            .trim_matches(|c| matches!(c, '{' | '}' | '[' | ']'))
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
        {
            let parsed = ScalarValue::try_from_string(n.to_string(), item)?;
            values.push(parsed);
        }
        lists.push(Some(ScalarValue::new_list_nullable(&values, item)));
    }
    let arrays: Vec<ArrayRef> = lists
        .into_iter()
        .map(|l| match l {
            Some(l) => l as ArrayRef,
            None => arrow::array::new_null_array(&DataType::new_list(item.clone(), true), 1),
        })
        .collect();
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    if refs.is_empty() {
        return Ok(arrow::array::new_empty_array(&DataType::new_list(
            item.clone(),
            true,
        )));
    }
    Ok(arrow::compute::concat(&refs)?)
}

/// `pg_catalog.pg_user`, as PostgreSQL defines it (the password is never
/// shown).
const PG_USER: &str = "SELECT rolname AS usename, oid AS usesysid, rolcreatedb AS usecreatedb,
        rolsuper AS usesuper, rolreplication AS userepl, rolbypassrls AS usebypassrls,
        '********' AS passwd, rolvaliduntil AS valuntil, rolconfig AS useconfig
     FROM pg_catalog.pg_roles WHERE rolcanlogin";

/// `pg_catalog` with some tables replaced, and some added.
#[derive(Debug)]
struct Overridden {
    inner: Arc<dyn SchemaProvider>,
    overrides: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait::async_trait]
impl SchemaProvider for Overridden {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        for name in self.overrides.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        match self.overrides.get(&name.to_ascii_lowercase()) {
            Some(t) => Ok(Some(t.clone())),
            None => self.inner.table(name).await,
        }
    }
    fn table_exist(&self, name: &str) -> bool {
        self.overrides.contains_key(&name.to_ascii_lowercase()) || self.inner.table_exist(name)
    }
}

/// `oid` is an unsigned 32-bit number (`UInt32`, sent to clients as
/// PostgreSQL's `oid`): asyncpg's type introspection binds `$1::oid[]` and
/// decodes only `oid[]` without introspecting first. The other
/// object-identifier types (`regclass` …) are planned by the catalog crate.
#[derive(Debug)]
pub(super) struct OidTypes;

impl TypePlanner for OidTypes {
    fn plan_type_field(
        &self,
        sql_type: &sqlparser::ast::DataType,
    ) -> datafusion::error::Result<Option<FieldRef>> {
        if let sqlparser::ast::DataType::Custom(name, args) = sql_type
            && args.is_empty()
            && name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("oid"))
        {
            return Ok(Some(Arc::new(Field::new("", DataType::UInt32, true))));
        }
        PgOidTypePlanner.plan_type_field(sql_type)
    }
}

/// `information_schema` as PostgreSQL defines it: views over `pg_catalog`,
/// so type names are PostgreSQL's (`bigint`, `double precision` …).
const INFORMATION_SCHEMA: &[(&str, &str)] = &[
    (
        "schemata",
        "SELECT current_database() AS catalog_name, n.nspname AS schema_name,
                pg_get_userbyid(n.nspowner) AS schema_owner,
                CAST(NULL AS VARCHAR) AS default_character_set_catalog,
                CAST(NULL AS VARCHAR) AS default_character_set_schema,
                CAST(NULL AS VARCHAR) AS default_character_set_name,
                CAST(NULL AS VARCHAR) AS sql_path
         FROM pg_catalog.pg_namespace n",
    ),
    (
        "tables",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema,
                c.relname AS table_name,
                CASE WHEN n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind = 'r'
                       THEN 'BASE TABLE'
                     WHEN c.relkind IN ('r', 'p') THEN 'BASE TABLE'
                     WHEN c.relkind IN ('v', 'm') THEN 'VIEW'
                     WHEN c.relkind = 'f' THEN 'FOREIGN'
                     ELSE 'LOCAL TEMPORARY' END AS table_type,
                CAST(NULL AS VARCHAR) AS self_referencing_column_name,
                CAST(NULL AS VARCHAR) AS reference_generation,
                CAST(NULL AS VARCHAR) AS user_defined_type_catalog,
                CAST(NULL AS VARCHAR) AS user_defined_type_schema,
                CAST(NULL AS VARCHAR) AS user_defined_type_name,
                CASE WHEN c.relkind IN ('r', 'p') THEN 'YES' ELSE 'NO' END AS is_insertable_into,
                'NO' AS is_typed,
                CAST(NULL AS VARCHAR) AS commit_action
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')",
    ),
    (
        "columns",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema,
                c.relname AS table_name, a.attname AS column_name,
                CAST(a.attnum AS INT) AS ordinal_position,
                CAST(NULL AS VARCHAR) AS column_default,
                CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END AS is_nullable,
                format_type(a.atttypid, NULL) AS data_type,
                CAST(NULL AS INT) AS character_maximum_length,
                CAST(NULL AS INT) AS numeric_precision,
                CAST(NULL AS INT) AS numeric_scale,
                CAST(NULL AS INT) AS datetime_precision,
                format_type(a.atttypid, NULL) AS udt_name,
                'NO' AS is_identity,
                'NEVER' AS is_generated,
                CASE WHEN c.relkind IN ('r', 'p') THEN 'YES' ELSE 'NO' END AS is_updatable
         FROM pg_catalog.pg_attribute a
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
    ),
    (
        "views",
        "SELECT current_database() AS table_catalog, n.nspname AS table_schema,
                c.relname AS table_name, CAST(NULL AS VARCHAR) AS view_definition,
                'NONE' AS check_option, 'NO' AS is_updatable, 'NO' AS is_insertable_into
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'v'",
    ),
    // Streams have no keys or constraints.
    (
        "table_constraints",
        "SELECT CAST(NULL AS VARCHAR) AS constraint_catalog,
                CAST(NULL AS VARCHAR) AS constraint_schema,
                CAST(NULL AS VARCHAR) AS constraint_name,
                CAST(NULL AS VARCHAR) AS table_catalog, CAST(NULL AS VARCHAR) AS table_schema,
                CAST(NULL AS VARCHAR) AS table_name, CAST(NULL AS VARCHAR) AS constraint_type,
                CAST(NULL AS VARCHAR) AS is_deferrable, CAST(NULL AS VARCHAR) AS initially_deferred
         WHERE false",
    ),
    (
        "key_column_usage",
        "SELECT CAST(NULL AS VARCHAR) AS constraint_catalog,
                CAST(NULL AS VARCHAR) AS constraint_schema,
                CAST(NULL AS VARCHAR) AS constraint_name,
                CAST(NULL AS VARCHAR) AS table_catalog, CAST(NULL AS VARCHAR) AS table_schema,
                CAST(NULL AS VARCHAR) AS table_name, CAST(NULL AS VARCHAR) AS column_name,
                CAST(NULL AS INT) AS ordinal_position,
                CAST(NULL AS INT) AS position_in_unique_constraint
         WHERE false",
    ),
];

/// Registers [`INFORMATION_SCHEMA`] in `catalog`.
pub(super) async fn information_schema(
    ctx: &SessionContext,
    catalog: &str,
    privileges: Arc<crate::privileges::Privileges>,
) -> Result<()> {
    let cat = ctx
        .catalog(catalog)
        .ok_or_else(|| SqlError::Internal(format!("no catalog {catalog}")))?;
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table(
        "table_privileges".to_string(),
        super::privileges::table_privileges(privileges),
    )?;
    for (name, sql) in INFORMATION_SCHEMA {
        let plan = ctx.state().create_logical_plan(sql).await?;
        schema.register_table(name.to_string(), Arc::new(ViewTable::new(plan, None)))?;
    }
    cat.register_schema("information_schema", schema)?;
    Ok(())
}

/// The roles `pg_roles` (and psql's `\du`) lists: those in the metadata
/// store, read at each scan, and the built-in superuser every trusted
/// session is, whether or not it is stored yet.
#[derive(Debug, Clone)]
pub(super) struct Roles {
    pub(super) log: Arc<streamhouse_log::Log>,
}

impl Roles {
    async fn stored(&self) -> Vec<streamhouse_log::RoleRecord> {
        match self.log.metadata().roles().await {
            Ok(roles) => roles,
            Err(e) => {
                tracing::warn!(error = %e, "roles not read for pg_roles");
                Vec::new()
            }
        }
    }
}

#[async_trait::async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        let mut names: Vec<String> = self.stored().await.into_iter().map(|r| r.name).collect();
        if !names.iter().any(|n| n == USER) {
            names.push(USER.to_string());
        }
        names.sort();
        names
    }

    /// A role dropped since [`Self::roles`] listed it is shown without
    /// rights (the caller expects every listed name to answer).
    async fn role(&self, name: &str) -> Option<Role> {
        let stored = self.log.metadata().role(name).await.ok().flatten();
        let (superuser, login) = match stored {
            Some(r) => (r.superuser, r.login),
            None => (name == USER, name == USER),
        };
        Some(Role {
            name: name.to_string(),
            is_superuser: superuser,
            can_login: login,
            can_create_db: false,
            // Only superusers manage roles; there is no CREATEROLE.
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}
