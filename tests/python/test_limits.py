"""The limits of each door, crossed on purpose: connection caps (PostgreSQL
refuses with 53300, Flight closes the connection), the Flight port's
largest message, the server's query memory (53200), and a session idle
inside a transaction block past idle_in_transaction_session_timeout (ended
with 25P03, nothing of its block written). After each, the other sessions
go on."""

import resource
import subprocess
import tempfile
import time

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import Server, _binary
from flight_api import produce

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("pad", pa.string())])
ERRORS = (flight.FlightError, pa.ArrowException)


@pytest.fixture(scope="module")
def small():
    """A server with small caps."""
    with tempfile.TemporaryDirectory() as d:
        s = Server(d, ["--pg-max-connections", "3", "--flight-max-connections", "2",
                       "--flight-max-message-bytes", "1048576",
                       "--query-memory", str(8 << 20)])
        try:
            with psycopg.connect(s.dsn, autocommit=True) as c:
                c.execute("CREATE STREAM lim (id BIGINT NOT NULL, pad TEXT)")
            yield s
        finally:
            assert s.stop() == 0


def put(client, rows, pad=""):
    b = pa.record_batch([pa.array(rows, pa.int64()), pa.array([pad] * len(rows))], schema=SCHEMA)
    return produce(client, "lim", [b])


def connect(dsn):
    """A connection once a slot is free: the cap of 3 counts connections
    the server has not seen closed yet (an earlier test's)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as e:
            if "too many clients" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def count(dsn):
    with connect(dsn) as c:
        return c.execute("SELECT count(*) FROM lim").fetchone()[0]


def test_postgres_connections_past_the_cap_are_refused_with_53300(small):
    held = [psycopg.connect(small.dsn, autocommit=True) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(small.dsn, autocommit=True, connect_timeout=10)
        assert "too many clients" in str(e.value)
        # The connections in hand go on.
        for c in held:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        # A freed slot is taken by the next client.
        held.pop().close()
        time.sleep(0.2)
        held.append(psycopg.connect(small.dsn, autocommit=True))
        assert held[-1].execute("SELECT 2").fetchone()[0] == 2
    finally:
        for c in held:
            c.close()


def test_a_query_past_the_servers_query_memory_fails_with_53200(small):
    join = ("SELECT count(*) FROM generate_series(1, 2000000) AS a(v) "
            "JOIN generate_series(1, 2000000) AS b(v) ON a.v = b.v")
    with connect(small.dsn) as a, connect(small.dsn) as b:
        # The session's own query_memory_limit (half the machine) allows it;
        # the server's pool does not.
        with pytest.raises(psycopg.errors.OutOfMemory) as e:
            a.execute(join)
        assert e.value.sqlstate == "53200"
        assert "server's" in str(e.value)
        # Both sessions go on.
        assert a.execute("SELECT count(*) FROM generate_series(1, 1000)").fetchone()[0] == 1000
        assert b.execute("SELECT 1").fetchone()[0] == 1


@pytest.mark.parametrize("binary", [False, True])
def test_a_copy_past_the_memory_limit_fails_with_53200_and_writes_nothing(small, binary):
    with connect(small.dsn) as c:
        before = c.execute("SELECT count(*) FROM lim").fetchone()[0]
        c.execute("SET query_memory_limit = '4MB'")
        # A COPY is one append: its rows are held until the end, within
        # the session's query memory.
        with pytest.raises(psycopg.errors.OutOfMemory):
            if binary:
                with c.cursor().copy("COPY lim (id, pad) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "text"])
                    for j in range(400_000):
                        copy.write_row((j, f"padding-{j}"))
            else:
                with c.cursor().copy("COPY lim (id, pad) FROM STDIN") as copy:
                    for i in range(0, 400_000, 10_000):
                        copy.write("".join(f"{j}\tpadding-{j}\n" for j in range(i, i + 10_000)))
        assert c.execute("SELECT count(*) FROM lim").fetchone()[0] == before
        # The session goes on; within the limit a COPY lands.
        with c.cursor().copy("COPY lim (id, pad) FROM STDIN") as copy:
            copy.write("".join(f"{j}\tsmall\n" for j in range(1000)))
        assert c.execute("SELECT count(*) FROM lim").fetchone()[0] == before + 1000


def test_flight_connections_past_the_cap_are_closed(small):
    a, b = flight.connect(small.flight), flight.connect(small.flight)
    try:
        assert put(a, [1])[0]["rows"] == 1
        assert put(b, [2])[0]["rows"] == 1
        c = flight.connect(small.flight)
        with pytest.raises(ERRORS) as e:
            put(c, [3])
        assert "unavailable" in str(e.value).lower() or "connect" in str(e.value).lower(), e.value
        c.close()
        # The two in hand go on.
        assert put(a, [4])[0]["rows"] == 1
    finally:
        a.close()
        b.close()
    time.sleep(0.2)
    c = flight.connect(small.flight)
    assert put(c, [5])[0]["rows"] == 1
    c.close()


def test_a_flight_message_past_the_limit_is_refused_and_the_port_goes_on(small):
    before = count(small.dsn)
    client = flight.connect(small.flight)
    with pytest.raises(ERRORS) as e:
        put(client, [10], pad="x" * (2 << 20))
    assert "resource" in str(e.value).lower() or "too large" in str(e.value).lower(), e.value
    client.close()
    assert count(small.dsn) == before
    client = flight.connect(small.flight)
    assert put(client, [11], pad="y" * 1000)[0]["rows"] == 1
    client.close()


def test_a_session_idle_in_a_block_past_its_timeout_is_ended_with_25p03(small):
    before = count(small.dsn)
    idle = psycopg.connect(small.dsn)
    idle.execute("SET idle_in_transaction_session_timeout = '500ms'")
    idle.commit()
    idle.execute("INSERT INTO lim VALUES (100, 'idle')")
    # Working in the block for longer than the timeout is not idling.
    for _ in range(4):
        time.sleep(0.3)
        idle.execute("SELECT count(*) FROM lim")
    time.sleep(1.5)
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as e:
        idle.execute("SELECT 1")
    assert "idle-in-transaction timeout" in str(e.value)
    idle.close()
    # Nothing of its block was written; the others go on.
    assert count(small.dsn) == before
    # Outside a block, idling is fine.
    with psycopg.connect(small.dsn, autocommit=True) as c:
        c.execute("SET idle_in_transaction_session_timeout = '200ms'")
        time.sleep(0.6)
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    """Each PostgreSQL connection holds two descriptors: a soft limit of 256
    must not cap the server below its connection caps."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.fail(f"this machine's hard open-file limit ({hard}) leaves nothing to raise")
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [_binary(), "server", "--data-dir", d, "--http-addr", "127.0.0.1:0",
             "--pg-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
             "--kafka-addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
        try:
            for line in proc.stdout:
                if line.startswith("Press Ctrl-C"):
                    break
            with open(f"/proc/{proc.pid}/limits") as f:
                row = next(l for l in f if l.startswith("Max open files"))
            assert row.split()[3:5] == [str(hard), str(hard)], row
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
