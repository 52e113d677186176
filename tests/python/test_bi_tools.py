"""The statements DBeaver, Metabase and Grafana send when they connect and
browse (captured from those tools' PostgreSQL drivers), run through both
the simple and the extended protocol. Each must succeed; the ones that list
schemas, tables and columns must list the streams."""

import psycopg
import pytest

DBEAVER = [
    "SET extra_float_digits = 3",
    "SET application_name = 'DBeaver 25.1.5 - Main <streamhouse>'",
    "SELECT current_schema(),session_user",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n "
    "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 "
    "AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname "
    "FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid "
    "WHERE t.oid = 1034",
    "SHOW search_path",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='streamhouse'",
    "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
    "SELECT string_agg(word, ',') from pg_catalog.pg_get_keywords() "
    "where word <> ALL ('{a,abs,absolute,action,ada,add,admin,after,all}'::text[])",
    "SELECT version()",
    "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1",
    "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1",
    "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, "
    "d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem "
    "LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid "
    "LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid "
    "WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') "
    "AND (et.typcategory IS NULL OR et.typcategory <> 'C')",
]

METABASE = [
    "SET extra_float_digits = 2",
    "SET application_name = 'Metabase v0.55.1'",
    "SHOW TRANSACTION ISOLATION LEVEL",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    """SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG"
       FROM pg_catalog.pg_namespace WHERE nspname <> 'pg_toast'
       AND (nspname !~ '^pg_temp_' OR nspname = (pg_catalog.current_schemas(true))[1])
       AND (nspname !~ '^pg_toast_temp_'
            OR nspname = replace((pg_catalog.current_schemas(true))[1], 'pg_temp_', 'pg_toast_temp_'))
       ORDER BY "TABLE_SCHEM\"""",
    """with table_privileges as (
         select NULL as role, t.schemaname as schema, t.objectname as table,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'update') as update,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'select') as select,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'insert') as insert,
           pg_catalog.has_table_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'delete') as delete
         from (
           select schemaname, tablename as objectname from pg_catalog.pg_tables
           union select schemaname, viewname as objectname from pg_catalog.pg_views
           union select schemaname, matviewname as objectname from pg_catalog.pg_matviews
         ) t
         where t.schemaname !~ '^pg_' and t.schemaname <> 'information_schema'
           and pg_catalog.has_schema_privilege(current_user, t.schemaname, 'usage'))
       select t.* from table_privileges t""",
    """SELECT "n"."nspname" AS "schema", "c"."relname" AS "name",
         CASE "c"."relkind" WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW'
           WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS "type",
         "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count"
       FROM "pg_catalog"."pg_class" AS "c"
       INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid"
       LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid")
         AND ("d"."objsubid" = '0') AND ("d"."classoid" = 'pg_class'::regclass)
       LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname")
         AND ("c"."relname" = "stat"."relname")
       WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ '^pg_')
         AND ("n"."nspname" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm')
         AND ("n"."nspname" IN ('public'))
       ORDER BY "type" ASC, "schema" ASC, "name" ASC""",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "show timezone",
]

GRAFANA = [
    "SELECT 1",
    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
    """SELECT quote_ident(table_name) AS "table" FROM information_schema.tables
       WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog',
         '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal')
       AND table_type = 'BASE TABLE'
       AND quote_ident(table_schema) IN (
         SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
         FROM generate_series(
           array_lower(string_to_array(current_setting('search_path'),','),1),
           array_upper(string_to_array(current_setting('search_path'),','),1)
         ) as i, string_to_array(current_setting('search_path'),',') s)""",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
    "ORDER BY table_name",
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_name = 'bi_orders' ORDER BY column_name",
]


@pytest.fixture(scope="module")
def dsn(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute(
            "CREATE STREAM IF NOT EXISTS bi_orders "
            "(id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION)"
        )
        c.execute("INSERT INTO bi_orders VALUES (1, 'ann', 2.5)")
    return server.dsn


def run_all(dsn, queries):
    """Each query through the extended protocol (psycopg's default) and
    through the simple one; returns the extended results."""
    results = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for q in queries:
            cur = c.execute(q)
            results.append(cur.fetchall() if cur.description else None)
            res = c.pgconn.exec_(q.encode())
            assert res.status in (
                psycopg.pq.ExecStatus.TUPLES_OK,
                psycopg.pq.ExecStatus.COMMAND_OK,
            ), f"simple protocol: {q}\n{res.error_message.decode()}"
    return results


def test_dbeaver(dsn):
    r = dict(zip(DBEAVER, run_all(dsn, DBEAVER)))
    assert r[DBEAVER[2]] == [("public", "streamhouse")]
    schemas = [row[2] for row in r[DBEAVER[3]]]  # oid, nspname, …
    assert "public" in schemas and "pg_catalog" in schemas
    assert r["SHOW search_path"] == [("public",)]
    assert [row[2] for row in r[DBEAVER[6]]] == ["streamhouse"]  # oid, oid, datname
    assert r[DBEAVER[7]][0][1] == "on"


def test_metabase(dsn):
    r = dict(zip(METABASE, run_all(dsn, METABASE)))
    assert "public" in [row[0] for row in r[METABASE[4]]]
    privileges = {row[2]: row for row in r[METABASE[5]]}
    assert privileges["bi_orders"][1:] == ("public", "bi_orders", True, True, True, True)
    tables = r[METABASE[6]]
    assert ("public", "bi_orders", "TABLE") in [row[:3] for row in tables]


def test_grafana(dsn):
    r = dict(zip(GRAFANA, run_all(dsn, GRAFANA)))
    assert r[GRAFANA[1]] == []
    assert ("bi_orders",) in r[GRAFANA[2]]
    assert ("bi_orders",) in r[GRAFANA[3]]
    cols = dict(r[GRAFANA[4]])
    assert cols["id"] == "bigint" and cols["customer"] == "text"
    assert cols["amount"] == "double precision"
