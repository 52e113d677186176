"""SQLAlchemy 2 (psycopg 3 driver) against StreamHouse: the engine's
connect-time probes, Core queries with bound parameters, and reflection
through pg_catalog (inspect() and autoloaded tables)."""

import datetime as dt

import pytest
import sqlalchemy as sa


@pytest.fixture(scope="module")
def engine(server):
    url = f"postgresql+psycopg://streamhouse@{server.host}:{server.port}/streamhouse"
    e = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        c.execute(sa.text(
            "CREATE STREAM IF NOT EXISTS sa_orders "
            "(id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION, placed TIMESTAMPTZ) "
            "WITH (partitions = 3, key = 'customer')"
        ))
        c.execute(sa.text("CREATE STREAM IF NOT EXISTS sa_other (x INT)"))
    yield e
    e.dispose()


def test_core_queries_bind_parameters(engine):
    placed = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)
    with engine.connect() as c:
        c.execute(
            sa.text("INSERT INTO sa_orders VALUES (:id, :customer, :amount, :placed)"),
            [
                {"id": 1, "customer": "ann", "amount": 10.5, "placed": placed},
                {"id": 2, "customer": "bob", "amount": 20.0, "placed": placed},
                {"id": 3, "customer": "ann", "amount": 7.25, "placed": placed},
            ],
        )
        rows = c.execute(
            sa.text(
                "SELECT customer, count(*) AS n, sum(amount) AS total FROM sa_orders "
                "WHERE amount > :min GROUP BY customer ORDER BY customer"
            ),
            {"min": 5},
        ).all()
    assert [tuple(r) for r in rows] == [("ann", 2, 17.75), ("bob", 1, 20.0)]


def test_inspect_lists_streams_and_their_columns(engine):
    insp = sa.inspect(engine)
    assert "public" in insp.get_schema_names()
    assert {"sa_orders", "sa_other"} <= set(insp.get_table_names())
    assert insp.has_table("sa_orders")
    assert not insp.has_table("no_such_stream")
    cols = {c["name"]: c for c in insp.get_columns("sa_orders")}
    assert isinstance(cols["id"]["type"], sa.BigInteger)
    assert cols["id"]["nullable"] is False
    assert isinstance(cols["customer"]["type"], sa.Text)
    assert cols["customer"]["nullable"] is True
    assert isinstance(cols["amount"]["type"], sa.Double)
    assert isinstance(cols["placed"]["type"], sa.TIMESTAMP)
    assert cols["placed"]["type"].timezone is True
    # Streams have no keys or indexes, and say so.
    assert insp.get_pk_constraint("sa_orders")["constrained_columns"] == []
    assert insp.get_foreign_keys("sa_orders") == []
    assert insp.get_indexes("sa_orders") == []
    assert insp.get_view_names() == []


def test_autoloaded_table_selects_with_expressions(engine):
    md = sa.MetaData()
    with engine.connect() as c:
        t = sa.Table("sa_orders", md, autoload_with=c)
        assert [k for k in t.c.keys() if not k.startswith("_")] == [
            "id", "customer", "amount", "placed"
        ]
        q = (
            sa.select(t.c.customer, sa.func.max(t.c.amount))
            .where(t.c.customer.like("a%"))
            .group_by(t.c.customer)
        )
        assert c.execute(q).all() == [("ann", 10.5)]
        # startswith() escapes with LIKE … ESCAPE '/'
        q = sa.select(t.c.id).where(t.c.customer.startswith("b", autoescape=True))
        assert c.execute(q).scalars().all() == [2]


def test_every_type_round_trips_through_core(engine):
    import decimal

    with engine.connect() as c:
        c.execute(sa.text(
            "CREATE STREAM sa_types (b BOOLEAN, i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL, "
            "f8 DOUBLE PRECISION, n NUMERIC(12, 3), t TEXT, v VARCHAR(10), by BYTEA, d DATE, "
            "ts TIMESTAMP, tz TIMESTAMPTZ)"
        ))
        t = sa.Table("sa_types", sa.MetaData(), autoload_with=c)
        row = {
            "b": True, "i2": 12, "i4": 34000, "i8": 5_000_000_000, "f4": 1.5, "f8": 2.25,
            "n": decimal.Decimal("12345.678"), "t": "héllo", "v": "v", "by": b"\x00\x01\xff",
            "d": dt.date(2026, 11, 26), "ts": dt.datetime(2026, 11, 26, 12, 30, 15, 250000),
            "tz": dt.datetime(2026, 11, 26, 12, 30, 15, tzinfo=dt.timezone.utc),
        }
        c.execute(t.insert(), [row])
        c.execute(t.insert(), [{k: None for k in row}])
        cols = [t.c[k] for k in row]
        got = c.execute(sa.select(*cols).where(t.c.b.is_(True))).one()
        assert got._asdict() == row
        nulls = c.execute(sa.select(*cols).where(t.c.b.is_(None))).one()
        assert tuple(nulls) == (None,) * len(row)


def test_errors_carry_sqlstates(engine):
    from sqlalchemy import exc

    with engine.connect() as c:
        for sql, code in [
            ("SELECT * FROM no_such_stream", "42P01"),
            ("SELECT nope FROM sa_orders", "42703"),
            ("SELEC 1", "42601"),
        ]:
            try:
                c.execute(sa.text(sql))
                raise AssertionError(f"{sql} should fail")
            except exc.DBAPIError as e:
                assert e.orig.sqlstate == code, (sql, e.orig.sqlstate)
        assert c.execute(sa.text("SELECT 1")).scalar() == 1
