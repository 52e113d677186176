"""Arrow Flight SQL through ADBC's Flight SQL driver: statements (queries,
DDL and INSERT sent through execute()), Arrow results, errors mapped to
gRPC status codes with the PostgreSQL door's messages, and transactions
(ADBC with autocommit off)."""

import warnings

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest


@pytest.fixture
def conn(server):
    c = flightsql.connect(server.flight, autocommit=True)
    yield c
    c.close()


def test_statements_and_arrow_results(conn):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE STREAM fs_orders (id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION, "
            "placed TIMESTAMPTZ) WITH (partitions = 2)"
        )
        cur.execute(
            "INSERT INTO fs_orders VALUES (1, 'ann', 10.5, '2026-11-26 10:00:00+00'), "
            "(2, 'bob', 20, NULL), (3, 'ann', 7.25, NULL)"
        )
        cur.execute(
            "SELECT customer, count(*) AS n, sum(amount) AS total FROM fs_orders "
            "GROUP BY customer ORDER BY customer"
        )
        table = cur.fetch_arrow_table()
        assert table.schema.field("n").type == pa.int64()
        assert table.to_pylist() == [
            {"customer": "ann", "n": 2, "total": 17.75},
            {"customer": "bob", "n": 1, "total": 20.0},
        ]
        cur.execute("SELECT placed FROM fs_orders WHERE id = 1")
        t = cur.fetch_arrow_table()
        assert t.schema.field("placed").type == pa.timestamp("us", tz="UTC")


def test_errors_carry_status_codes_and_sqlstates(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.ProgrammingError) as e:
            cur.execute("SELECT * FROM no_such_stream")
        assert "NOT_FOUND" in str(e.value) and "42P01" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELEC 1")
        assert "INVALID_ARGUMENT" in str(e.value) and "42601" in str(e.value)
        # The connection is still good.
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)]


def test_catalog_commands_list_streams_with_their_schemas(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE STREAM fs_meta (id BIGINT NOT NULL, note TEXT)")
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "StreamHouse"
    assert set(conn.adbc_get_table_types()) == {"TABLE", "VIEW", "SYSTEM TABLE"}
    objects = conn.adbc_get_objects(depth="all", db_schema_filter="public").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["streamhouse"]
    (public,) = objects[0]["catalog_db_schemas"]
    tables = {t["table_name"]: t for t in public["db_schema_tables"]}
    assert tables["fs_meta"]["table_type"] == "TABLE"
    assert [c["column_name"] for c in tables["fs_meta"]["table_columns"]][:2] == ["id", "note"]
    schema = conn.adbc_get_table_schema("fs_meta", db_schema_filter="public")
    assert schema.field("id").type == pa.int64() and not schema.field("id").nullable
    assert schema.field("note").type == pa.string()


def test_parameters_with_question_marks_and_numbers(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE STREAM fs_params (id BIGINT NOT NULL, name TEXT, score DOUBLE PRECISION)")
        cur.execute("INSERT INTO fs_params (id, name, score) VALUES (?, ?, ?)", (1, "ann", 0.5))
        assert cur.rowcount == 1
        cur.executemany(
            "INSERT INTO fs_params VALUES ($1, $2, $3)", [(2, "bob", 1.5), (3, "cy", 2.5)]
        )
        cur.execute("SELECT id, name FROM fs_params WHERE score > ? AND name <> ? ORDER BY id", (1.0, "cy"))
        assert cur.fetch_arrow_table().to_pylist() == [{"id": 2, "name": "bob"}]
        # A '?' inside a string literal is text, not a placeholder.
        cur.execute("SELECT 'why?' AS q, $1::bigint + 1 AS n", (41,))
        assert cur.fetchall() == [("why?", 42)]
        # The same prepared statement, run again with new values.
        for i in (1, 3):
            cur.execute("SELECT name FROM fs_params WHERE id = ?", (i,))
            assert cur.fetchall() == [({1: "ann", 3: "cy"}[i],)]
        # Parameter types are inferred at prepare time.
        params = cur.adbc_prepare("SELECT id, score FROM fs_params WHERE id = ? AND name = ?")
        assert params.types == [pa.int64(), pa.string()]
        # Wrong parameter count and type errors are clean errors.
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT name FROM fs_params WHERE id = ?", (1, 2))
        assert "INVALID_ARGUMENT" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT name FROM fs_params WHERE id = ?", ("not a number",))
        assert "INVALID_ARGUMENT" in str(e.value)
        cur.execute("SELECT count(*) FROM fs_params")
        assert cur.fetchall() == [(3,)]


def test_adbc_ingest_creates_appends_and_is_atomic(conn):
    data = pa.table({
        "id": pa.array(range(1000), pa.int64()),
        "name": pa.array([f"n{i}" for i in range(1000)], pa.large_string()),
        "at": pa.array([1_700_000_000_000_000 + i for i in range(1000)], pa.timestamp("us", tz="UTC")),
    })
    with conn.cursor() as cur:
        assert cur.adbc_ingest("fs_ingest", data, mode="create") == 1000
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.adbc_ingest("fs_ingest", data, mode="create")
        assert "ALREADY_EXISTS" in str(e.value)
        assert cur.adbc_ingest("fs_ingest", data.slice(0, 10), mode="append") == 10
        # Columns are matched by name, in any order, and cast like INSERT.
        reordered = pa.table({"name": ["x"], "id": pa.array([5000], pa.int32()), "at": data["at"][:1]})
        assert cur.adbc_ingest("fs_ingest", reordered, mode="append") == 1
        # A bad value anywhere refuses the whole upload.
        bad = pa.table({"id": pa.array(["1", "oops"]), "name": ["a", "b"], "at": data["at"][:2]})
        with pytest.raises(adbc_driver_manager.Error):
            cur.adbc_ingest("fs_ingest", bad, mode="append")
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.adbc_ingest("fs_missing", data, mode="append")
        assert "NOT_FOUND" in str(e.value)
        cur.execute("SELECT count(*), count(DISTINCT id), max(id) FROM fs_ingest")
        assert cur.fetchall() == [(1011, 1001, 5000)]
        cur.execute("SELECT name, at FROM fs_ingest WHERE id = 999 LIMIT 1")
        t = cur.fetch_arrow_table()
        assert t.schema.field("name").type == pa.string()
        assert t.to_pylist()[0]["name"] == "n999"
        assert cur.adbc_ingest("fs_ingest", data.slice(0, 3), mode="replace") == 3
        cur.execute("SELECT count(*) FROM fs_ingest")
        assert cur.fetchall() == [(3,)]


def test_materialized_view_is_a_table_for_both_doors(server, conn):
    import time

    import psycopg

    with conn.cursor() as cur:
        cur.execute("CREATE STREAM fs_clicks (page TEXT, ms BIGINT)")
        cur.execute("INSERT INTO fs_clicks VALUES ('a', 10), ('b', 20), ('a', 30)")
        cur.execute("CREATE MATERIALIZED VIEW fs_pages AS "
                    "SELECT page, count(*) AS hits, sum(ms) AS total FROM fs_clicks GROUP BY page")
        cur.execute("SELECT * FROM fs_pages ORDER BY page")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"page": "a", "hits": 2, "total": 40},
            {"page": "b", "hits": 1, "total": 20},
        ]
        cur.execute("INSERT INTO fs_clicks VALUES ('c', 5)")
    with psycopg.connect(server.dsn, autocommit=True) as pg:
        deadline = time.time() + 10
        while True:
            rows = pg.execute("SELECT page, hits, total FROM fs_pages ORDER BY page").fetchall()
            if rows == [("a", 2, 40), ("b", 1, 20), ("c", 1, 5)] or time.time() > deadline:
                break
            time.sleep(0.02)
        assert rows == [("a", 2, 40), ("b", 1, 20), ("c", 1, 5)]
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            pg.execute("CREATE MATERIALIZED VIEW fs_bad AS SELECT x.page FROM fs_clicks x "
                       "JOIN fs_clicks y ON x.page < y.page")
        # An inner join is maintained like any other view.
        pg.execute("CREATE MATERIALIZED VIEW fs_pairs AS SELECT x.page, count(*) AS n "
                   "FROM fs_clicks x JOIN fs_clicks y ON x.page = y.page GROUP BY x.page")
        assert pg.execute("SELECT page, n FROM fs_pairs ORDER BY page").fetchall() == [
            ("a", 4), ("b", 1), ("c", 1)]


def test_transactions_with_autocommit_off(server, conn):
    with conn.cursor() as cur:
        cur.execute("CREATE STREAM fs_tx (id BIGINT, s TEXT)")
        cur.execute("CREATE STREAM fs_tx2 (id BIGINT)")

    def count(c, stream):
        with c.cursor() as cur:
            cur.execute(f"SELECT count(*) AS n FROM {stream}")
            return cur.fetchone()[0]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transactions are supported: no warning
        tx = flightsql.connect(server.flight)
    try:
        with tx.cursor() as cur:
            cur.execute("INSERT INTO fs_tx VALUES (1, 'a'), (2, 'b')")
            cur.execute("INSERT INTO fs_tx2 VALUES (10)")
            # Statements of the transaction see its writes; nobody else does.
            assert count(tx, "fs_tx") == 2
            assert count(conn, "fs_tx") == 0
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute("CREATE STREAM fs_never (id BIGINT)")
            assert "25001" in str(e.value)
        tx.rollback()
        assert count(tx, "fs_tx") == 0
        with tx.cursor() as cur:
            cur.execute("INSERT INTO fs_tx VALUES (3, 'c')")
            cur.execute("INSERT INTO fs_tx2 VALUES (30)")
            assert count(conn, "fs_tx") == 0
        tx.commit()
        assert count(conn, "fs_tx") == 1
        assert count(conn, "fs_tx2") == 1
        # A failed statement fails the transaction: its commit reports that
        # nothing was written.
        with tx.cursor() as cur:
            cur.execute("INSERT INTO fs_tx VALUES (6, 'f')")
            with pytest.raises(adbc_driver_manager.Error):
                cur.execute("SELECT * FROM no_such_stream")
        with pytest.raises(adbc_driver_manager.Error) as e:
            tx.commit()
        assert "rolled back" in str(e.value)
        assert count(conn, "fs_tx") == 1
    finally:
        tx.close()
