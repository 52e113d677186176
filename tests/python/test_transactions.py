"""Transaction blocks through real drivers: psycopg outside autocommit
(commit, rollback, savepoints, an error in the block, COPY, the buffer
limit, a connection that vanishes), SQLAlchemy sessions, and a server
killed with SIGKILL before and after COMMIT's acknowledgement."""

import signal
import tempfile

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from psycopg import errors

from conftest import Server


def count(conn, stream):
    return conn.execute(f"SELECT count(*) FROM {stream}").fetchone()[0]


@pytest.fixture(scope="module")
def admin(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("CREATE STREAM tx_a (id BIGINT, note TEXT) WITH (partitions = 3)")
        c.execute("CREATE STREAM tx_b (id BIGINT)")
        yield c


def test_commit_publishes_writes_to_two_streams_together_and_rollback_discards(server, admin):
    with psycopg.connect(server.dsn) as c:  # autocommit off: psycopg sends BEGIN
        c.execute("INSERT INTO tx_a VALUES (%s, %s), (%s, %s)", (1, "x", 2, "y"))
        c.execute("INSERT INTO tx_b SELECT id * 10 FROM tx_a")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        # The block sees its own writes; nobody else does.
        assert count(c, "tx_a") == 2 and count(c, "tx_b") == 2
        assert count(admin, "tx_a") == 0 and count(admin, "tx_b") == 0
        c.rollback()
        assert count(c, "tx_a") == 0
        c.execute("INSERT INTO tx_a VALUES (3, 'z')")
        c.execute("INSERT INTO tx_b VALUES (30)")
        c.commit()
    assert count(admin, "tx_a") == 1 and count(admin, "tx_b") == 1


def test_savepoints_through_nested_transaction_blocks(server, admin):
    before = count(admin, "tx_a")
    with psycopg.connect(server.dsn, autocommit=True) as c:
        with c.transaction():
            c.execute("INSERT INTO tx_a VALUES (100, 'outer')")
            with pytest.raises(errors.InvalidTextRepresentation):
                with c.transaction():  # SAVEPOINT …
                    c.execute("INSERT INTO tx_a VALUES (101, 'inner')")
                    c.execute("INSERT INTO tx_a VALUES ('not a number', 'inner')")
            # … ROLLBACK TO SAVEPOINT: the outer block goes on.
            with c.transaction():
                c.execute("INSERT INTO tx_a VALUES (102, 'released')")
            assert count(c, "tx_a") == before + 2
    ids = [r[0] for r in admin.execute("SELECT id FROM tx_a WHERE id >= 100 ORDER BY id")]
    assert ids == [100, 102]


def test_an_error_fails_the_block_and_commit_then_rolls_back(server, admin):
    before = count(admin, "tx_a")
    with psycopg.connect(server.dsn) as c:
        c.execute("INSERT INTO tx_a VALUES (200, 'x')")
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1 / 0")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("INSERT INTO tx_a VALUES (201, 'x')")
        c.commit()  # PostgreSQL answers ROLLBACK
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert count(admin, "tx_a") == before


def test_ddl_in_a_block_is_refused_and_the_writes_still_commit(server, admin):
    before = count(admin, "tx_b")
    with psycopg.connect(server.dsn) as c:
        c.execute("INSERT INTO tx_b VALUES (1)")
        with pytest.raises(errors.ActiveSqlTransaction) as e:
            c.execute("CREATE STREAM tx_never (id BIGINT)")
        assert "transaction block" in str(e.value)
        c.execute("INSERT INTO tx_b VALUES (2)")
        c.commit()
    assert count(admin, "tx_b") == before + 2
    with pytest.raises(errors.UndefinedTable):
        admin.execute("SELECT * FROM tx_never")


def test_copy_in_a_block_waits_for_commit(server, admin):
    before = count(admin, "tx_a")
    with psycopg.connect(server.dsn) as c:
        with c.cursor() as cur:
            with cur.copy("COPY tx_a FROM STDIN") as copy:
                for i in range(1000):
                    copy.write_row((1000 + i, "copied"))
        assert count(c, "tx_a") == before + 1000
        assert count(admin, "tx_a") == before
        c.rollback()
        with c.cursor() as cur:
            with cur.copy("COPY tx_a FROM STDIN") as copy:
                for i in range(500):
                    copy.write_row((5000 + i, "copied"))
        c.commit()
    assert count(admin, "tx_a") == before + 500


def test_a_block_past_its_buffer_size_fails_with_54000(server, admin):
    before = count(admin, "tx_a")
    with psycopg.connect(server.dsn) as c:
        c.execute("SET transaction_buffer_size = '64kB'")
        c.execute("INSERT INTO tx_a VALUES (1, 'small')")
        with pytest.raises(errors.ProgramLimitExceeded):
            c.execute(
                "INSERT INTO tx_a SELECT value, repeat('x', 100) FROM generate_series(1, 10000) AS t(value)"
            )
        c.commit()
    assert count(admin, "tx_a") == before


def test_a_connection_that_vanishes_mid_block_writes_nothing(server, admin):
    before = count(admin, "tx_b")
    c = psycopg.connect(server.dsn)
    c.execute("INSERT INTO tx_b VALUES (7), (8), (9)")
    assert count(c, "tx_b") == before + 3
    c.pgconn.finish()  # the socket closes; no COMMIT, no ROLLBACK
    assert count(admin, "tx_b") == before


def test_sqlalchemy_session_rollback_and_commit(server, admin):
    url = f"postgresql+psycopg://streamhouse@{server.host}:{server.port}/streamhouse"
    engine = sa.create_engine(url)
    try:
        before = count(admin, "tx_b")
        insert = sa.text("INSERT INTO tx_b VALUES (:id)")
        with Session(engine) as session:
            session.execute(insert, [{"id": 1}, {"id": 2}])
            assert session.execute(sa.text("SELECT count(*) FROM tx_b")).scalar() == before + 2
            session.rollback()
            assert count(admin, "tx_b") == before
            session.execute(insert, [{"id": 3}])
            session.commit()
        assert count(admin, "tx_b") == before + 1
    finally:
        engine.dispose()


def test_sigkill_before_commit_leaves_nothing_and_after_commit_everything():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as c:
                c.execute("CREATE STREAM crash_a (id BIGINT)")
                c.execute("CREATE STREAM crash_b (id BIGINT)")
            # Committed and acknowledged: must survive.
            with psycopg.connect(s.dsn) as c:
                c.execute("INSERT INTO crash_a SELECT value FROM generate_series(1, 300) AS t(value)")
                c.execute("INSERT INTO crash_b VALUES (1), (2)")
                c.commit()
            # Written in a block that never commits.
            pending = psycopg.connect(s.dsn)
            pending.execute("INSERT INTO crash_a SELECT value FROM generate_series(1, 5000) AS t(value)")
            pending.execute("INSERT INTO crash_b VALUES (3)")
            assert count(pending, "crash_a") == 5300
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=30)
            pending.pgconn.finish()
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as c:
                assert count(c, "crash_a") == 300
                assert count(c, "crash_b") == 2
        finally:
            assert s.stop() == 0
