"""The ADBC PostgreSQL driver (libpq-based): it loads PostgreSQL's type
table from pg_type on connect and runs every query as
`COPY (query) TO STDOUT (FORMAT binary)`, decoding the rows into Arrow."""

import datetime as dt

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa


def test_adbc_queries_come_back_as_arrow(server):
    with adbc.connect(server.dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE STREAM adbc_t (id BIGINT NOT NULL, s TEXT, f DOUBLE PRECISION, "
                "ts TIMESTAMPTZ, d DATE, b BOOLEAN)"
            )
            cur.execute(
                "INSERT INTO adbc_t VALUES (1, 'a', 1.5, '2026-11-26 10:00:00+00', '2026-11-26', true), "
                "(2, NULL, NULL, NULL, NULL, NULL)"
            )
            cur.execute("SELECT id, s, f, ts, d, b FROM adbc_t ORDER BY id")
            table = cur.fetch_arrow_table()
            assert table.schema.field("id").type == pa.int64()
            assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
            assert table.schema.field("d").type == pa.date32()
            rows = table.to_pylist()
            assert rows[0]["s"] == "a" and rows[0]["f"] == 1.5 and rows[0]["b"] is True
            assert rows[0]["ts"] == dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.timezone.utc)
            assert rows[0]["d"] == dt.date(2026, 11, 26)
            assert rows[1] == {"id": 2, "s": None, "f": None, "ts": None, "d": None, "b": None}
            cur.execute("SELECT id FROM adbc_t WHERE id = $1", parameters=(2,))
            assert cur.fetchall() == [(2,)]
            cur.execute("SELECT k, count(*) AS n FROM (VALUES ('x'), ('y'), ('x')) AS t(k) GROUP BY k ORDER BY k")
            assert cur.fetch_arrow_table().to_pylist() == [{"k": "x", "n": 2}, {"k": "y", "n": 1}]
