"""Privileges through every door, with real clients: psycopg and psql on
the PostgreSQL door, ADBC and pyarrow.flight (Flight SQL, producers,
consumers, groups), the HTTP admin API. A user with SELECT on one stream
reads it and nothing else; a GRANT counts on the same connection's next
call, a REVOKE too; denials are audited; two agents share grants."""

import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.flight as fl
import psycopg
import pytest
from psycopg import errors

from conftest import Server, password_server, shared_store_args
from flight_api import action, produce

PASSWORD = "admin-password"


@pytest.fixture(scope="module")
def server():
    with password_server(PASSWORD) as s:
        with admin(s) as c:
            c.execute("CREATE STREAM orders (id bigint, amount double) WITH (partitions = 2)")
            c.execute("CREATE STREAM secrets (id bigint, note text)")
            c.execute("INSERT INTO orders VALUES (1, 10.5), (2, 20.0)")
            c.execute("INSERT INTO secrets VALUES (1, 'the password is swordfish')")
        yield s


def connect(s, user, password):
    return psycopg.connect(host=s.host, port=s.port, dbname="streamhouse", user=user,
                           password=password, autocommit=True)


def admin(s):
    return connect(s, "streamhouse", PASSWORD)


def user(s, name, password, grants=()):
    with admin(s) as c:
        c.execute(f"CREATE USER {name} WITH PASSWORD '{password}'")
        for g in grants:
            c.execute(g)


def flight_client(s, name, password):
    client = fl.FlightClient(s.flight)
    header = client.authenticate_basic_token(name, password)
    return client, fl.FlightCallOptions(headers=[header])


def consume(client, options, ticket):
    return client.do_get(fl.Ticket(json.dumps(ticket).encode()), options=options).read_all()


def http_token(s, name, password):
    login = urllib.request.Request(
        f"http://{s.http}/v1/login", method="POST",
        headers={"Authorization": "Basic "
                 + base64.b64encode(f"{name}:{password}".encode()).decode()})
    with urllib.request.urlopen(login) as r:
        return json.load(r)["token"]


def http_status(s, path, token):
    request = urllib.request.Request(f"http://{s.http}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def denials(s, name):
    with admin(s) as c:
        return c.execute(
            "SELECT door, object FROM streamhouse.audit "
            "WHERE event = 'denied' AND user_name = %s ORDER BY at", (name,)).fetchall()


def test_select_on_one_stream_reads_it_and_nothing_else_through_every_door(server):
    user(server, "reader", "r", ["GRANT SELECT ON orders TO reader"])

    # The PostgreSQL door.
    with connect(server, "reader", "r") as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        with pytest.raises(errors.InsufficientPrivilege, match="secrets"):
            c.execute("SELECT * FROM secrets")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT o.id FROM orders o WHERE o.id IN (SELECT id FROM secrets)")
        # Table functions read the relation they are given.
        assert c.execute("SELECT count(*) FROM TUMBLE(orders, _timestamp, INTERVAL '1 minute')"
                         ).fetchone() == (2,)
        with pytest.raises(errors.InsufficientPrivilege, match="secrets"):
            c.execute("SELECT * FROM TUMBLE(secrets, _timestamp, INTERVAL '1 minute')")
        with pytest.raises(errors.InsufficientPrivilege, match="secrets"):
            c.execute("EXPLAIN SELECT * FROM secrets")
        with pytest.raises(errors.InsufficientPrivilege, match="INSERT"):
            c.execute("INSERT INTO orders VALUES (3, 1.0)")
        with pytest.raises(errors.InsufficientPrivilege, match="secrets"):
            c.execute("INSERT INTO orders SELECT id, 1.0 FROM secrets")
        with pytest.raises(errors.InsufficientPrivilege):
            with c.cursor().copy("COPY orders FROM STDIN") as copy:
                copy.write_row((4, 2.0))
        with pytest.raises(errors.InsufficientPrivilege):
            with c.cursor().copy("COPY secrets TO STDOUT") as copy:
                list(copy)
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("CREATE STREAM mine (x bigint)")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("DROP STREAM orders")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("GRANT SELECT ON secrets TO reader")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("CREATE USER sneaky WITH SUPERUSER PASSWORD 'x'")
        with pytest.raises(errors.InsufficientPrivilege, match="streamhouse.audit"):
            c.execute("SELECT * FROM streamhouse.audit")
        # The catalog stays open, as in PostgreSQL.
        assert c.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'secrets'"
                         ).fetchone() == (1,)
    # Nothing was written by the refused calls.
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        assert c.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'mine'"
                         ).fetchone() == (0,)

    # Flight SQL through ADBC.
    import adbc_driver_flightsql.dbapi as flightsql

    with flightsql.connect(server.flight, db_kwargs={"username": "reader", "password": "r"},
                           autocommit=True) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetchall() == [(2,)]
        with pytest.raises(Exception, match="PERMISSION_DENIED|permission denied"):
            cur.execute("SELECT * FROM secrets")
            cur.fetchall()
        with pytest.raises(Exception, match="PERMISSION_DENIED|permission denied"):
            cur.adbc_ingest("orders", pa.table({"id": [9], "amount": [9.0]}), mode="append")

    # The producer and consumer API on the Flight port.
    client, opts = flight_client(server, "reader", "r")
    assert consume(client, opts, {"stream": "orders"}).num_rows == 2
    with pytest.raises(fl.FlightUnauthorizedError):
        consume(client, opts, {"stream": "secrets"})
    with pytest.raises(fl.FlightUnauthorizedError):
        consume(client, opts, {"stream": "orders", "group": "billing"})
    with pytest.raises(fl.FlightUnauthorizedError):
        action(client, "join_group",
                  {"group": "billing", "stream": "orders", "member": "m1"}, options=opts)
    batch = pa.record_batch({"id": [5], "amount": [5.0]})
    with pytest.raises(fl.FlightUnauthorizedError):
        produce(client, "orders", [batch], options=opts)

    # The HTTP admin API: a token, but not a monitor.
    token = http_token(server, "reader", "r")
    assert http_status(server, "/v1/streams", token) == 403
    assert http_status(server, "/metrics", token) == 403

    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    doors = {door for door, _ in denials(server, "reader")}
    assert doors == {"pgwire", "flight", "http"}, doors
    objects = {o for _, o in denials(server, "reader")}
    assert {"relation secrets", "relation orders", "consumer group billing",
            "relation streamhouse.audit", "schema public"} <= objects, objects


def test_grant_counts_on_the_next_call_and_so_does_revoke(server):
    user(server, "late", "l")
    client, opts = flight_client(server, "late", "l")
    token = http_token(server, "late", "l")
    with connect(server, "late", "l") as c:
        prepared = "SELECT count(*) FROM secrets WHERE id > %s"
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute(prepared, (0,), prepare=True)
        with pytest.raises(fl.FlightUnauthorizedError):
            consume(client, opts, {"stream": "secrets"})
        assert http_status(server, "/v1/agents", token) == 403
        with admin(server) as a:
            a.execute("GRANT SELECT ON secrets TO late")
            a.execute("GRANT pg_monitor TO late")
        # The same connection, statement, token: allowed now.
        assert c.execute(prepared, (0,), prepare=True).fetchone() == (1,)
        assert consume(client, opts, {"stream": "secrets"}).num_rows == 1
        assert http_status(server, "/v1/agents", token) == 200
        with admin(server) as a:
            a.execute("REVOKE SELECT ON secrets FROM late")
            a.execute("REVOKE pg_monitor FROM late")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute(prepared, (0,), prepare=True)
        with pytest.raises(fl.FlightUnauthorizedError):
            consume(client, opts, {"stream": "secrets"})
        assert http_status(server, "/v1/agents", token) == 403


def test_group_consumers_need_consume_on_their_group(server):
    user(server, "worker", "w", ["GRANT SELECT, INSERT ON orders TO worker",
                                 "GRANT CONSUME ON GROUP shipping TO worker"])
    client, opts = flight_client(server, "worker", "w")
    batch = pa.record_batch({"id": pa.array([7], pa.int64()),
                             "amount": pa.array([7.0], pa.float64())})
    acks = produce(client, "orders", [batch], options=opts)
    assert sum(a["rows"] for a in acks) == 1
    read = consume(client, opts, {"stream": "orders", "group": "shipping"})
    assert read.num_rows == 3
    action(client, "commit_offsets",
              {"group": "shipping", "stream": "orders", "offsets": {"0": 1}}, options=opts)
    with pytest.raises(fl.FlightUnauthorizedError):
        action(client, "commit_offsets",
                  {"group": "billing", "stream": "orders", "offsets": {"0": 1}}, options=opts)
    with pytest.raises(fl.FlightUnauthorizedError):
        action(client, "reset_offsets",
                  {"group": "billing", "stream": "orders", "to": "earliest"}, options=opts)
    # Every group, granted at once.
    with admin(server) as a:
        a.execute("GRANT CONSUME ON ALL GROUPS TO worker")
    action(client, "reset_offsets",
              {"group": "billing", "stream": "orders", "to": "earliest"}, options=opts)


def test_owners_create_grant_and_drop_what_they_own(server):
    user(server, "maker", "m", ["GRANT CREATE ON SCHEMA public TO maker"])
    user(server, "other", "o")
    with connect(server, "maker", "m") as c:
        c.execute("CREATE STREAM made (x bigint)")
        c.execute("INSERT INTO made VALUES (1)")
        c.execute("CREATE MATERIALIZED VIEW made_count AS SELECT count(*) AS n FROM made")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("CREATE MATERIALIZED VIEW leak AS SELECT * FROM secrets")
        c.execute("GRANT SELECT ON made TO other")
    with connect(server, "other", "o") as c:
        assert c.execute("SELECT x FROM made").fetchall() == [(1,)]
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("DROP STREAM made")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT * FROM made_count")
        with pytest.raises(errors.InsufficientPrivilege, match="made_count"):
            c.execute("SELECT * FROM changes(made_count)")
    with connect(server, "maker", "m") as c:
        c.execute("GRANT SELECT ON made_count TO other")
    with connect(server, "other", "o") as c:
        # A view is read with SELECT on the view alone.
        deadline = time.monotonic() + 30
        while c.execute("SELECT n FROM made_count").fetchall() != [(1,)]:
            assert time.monotonic() < deadline, "the view never counted the row"
            time.sleep(0.1)
        assert c.execute("SELECT count(*) FROM changes(made_count)").fetchone()[0] >= 1
    with admin(server) as a:
        with pytest.raises(errors.DependentObjectsStillExist, match="owns"):
            a.execute("DROP ROLE maker")
        rows = a.execute(
            "SELECT grantee, privilege_type FROM information_schema.table_privileges "
            "WHERE table_name = 'made' ORDER BY 1, 2").fetchall()
        assert rows == [("maker", "DELETE"), ("maker", "DROP"), ("maker", "INSERT"),
                        ("maker", "SELECT"), ("maker", "UPDATE"), ("other", "SELECT")]
    with connect(server, "maker", "m") as c:
        c.execute("DROP MATERIALIZED VIEW made_count")
        c.execute("DROP STREAM made")
    with admin(server) as a:
        assert a.execute("SELECT count(*) FROM information_schema.table_privileges "
                         "WHERE table_name = 'made'").fetchone() == (0,)
        a.execute("DROP ROLE maker")


def test_table_writes_need_their_own_privileges(server):
    """INSERT, UPDATE and DELETE of a table each need their privilege, and
    UPDATE and DELETE with a WHERE also SELECT (they read the rows)."""
    with admin(server) as c:
        c.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint)")
        c.execute("INSERT INTO accounts VALUES (1, 10), (2, 20)")
    user(server, "clerk", "clerk-pw", ["GRANT SELECT, INSERT ON accounts TO clerk"])
    with connect(server, "clerk", "clerk-pw") as c:
        c.execute("INSERT INTO accounts VALUES (3, 30)")
        with pytest.raises(errors.InsufficientPrivilege, match="accounts"):
            c.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
        with pytest.raises(errors.InsufficientPrivilege, match="accounts"):
            c.execute("DELETE FROM accounts WHERE id = 1")
    with admin(server) as a:
        a.execute("GRANT UPDATE, DELETE ON accounts TO clerk")
        a.execute("REVOKE SELECT ON accounts FROM clerk")
    with connect(server, "clerk", "clerk-pw") as c:
        with pytest.raises(errors.InsufficientPrivilege, match="accounts"):
            c.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
    with admin(server) as a:
        a.execute("GRANT SELECT ON accounts TO clerk")
    with connect(server, "clerk", "clerk-pw") as c:
        assert c.execute("UPDATE accounts SET balance = 0 WHERE id = 1").rowcount == 1
        assert c.execute("DELETE FROM accounts WHERE id = 2").rowcount == 1
        assert c.execute("SELECT * FROM accounts ORDER BY id").fetchall() == [(1, 0), (3, 30)]
        # The table's log is not a name to read or write around the table.
        with pytest.raises(errors.ReservedName):
            c.execute("INSERT INTO __table__accounts VALUES (9, 9, false)")


def test_role_membership_passes_privileges_on(server):
    with admin(server) as a:
        a.execute("CREATE ROLE analysts")
        a.execute("GRANT SELECT ON secrets TO analysts")
    user(server, "bob", "b", ["GRANT analysts TO bob"])
    with connect(server, "bob", "b") as c:
        assert c.execute("SELECT count(*) FROM secrets").fetchone() == (1,)
        with admin(server) as a:
            with pytest.raises(errors.InvalidGrantOperation):
                a.execute("GRANT bob TO analysts")
            with pytest.raises(errors.InvalidGrantOperation):
                a.execute("GRANT INSERT ON SCHEMA public TO bob")
            with pytest.raises(errors.UndefinedObject):
                a.execute("GRANT SELECT ON secrets TO nobody")
            with pytest.raises(errors.UndefinedTable):
                a.execute("GRANT SELECT ON nothing_here TO bob")
            a.execute("REVOKE analysts FROM bob")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT count(*) FROM secrets")
    with connect(server, "bob", "b") as c:
        # A user may change their own password, and nothing else of theirs.
        c.execute("ALTER USER bob WITH PASSWORD 'b2'")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("ALTER USER bob WITH SUPERUSER")


def test_the_catalog_tells_the_truth_about_privileges(server):
    user(server, "viewer", "v", ["GRANT SELECT ON orders TO viewer"])
    with connect(server, "viewer", "v") as c:
        assert c.execute(
            "SELECT has_table_privilege('orders', 'SELECT'), "
            "has_table_privilege('orders', 'INSERT'), "
            "has_table_privilege('secrets', 'SELECT'), "
            "has_table_privilege('streamhouse', 'secrets', 'SELECT'), "
            "current_user").fetchone() == (True, False, False, True, "viewer")
        assert c.execute("SHOW session_authorization").fetchone() == ("viewer",)
        assert c.execute("SELECT usename, usesuper, passwd FROM pg_user WHERE usename IN "
                         "('viewer', 'streamhouse') ORDER BY 1").fetchall() == [
            ("streamhouse", True, "********"), ("viewer", False, "********")]
        with pytest.raises(psycopg.Error, match="cannot be changed"):
            c.execute("SET session_authorization = 'streamhouse'")
        privileges = c.execute(
            "SELECT grantor, privilege_type, is_grantable FROM "
            "information_schema.table_privileges WHERE grantee = 'viewer'").fetchall()
        assert privileges == [("streamhouse", "SELECT", "NO")]
    env = dict(os.environ, PGPASSWORD="v")
    r = subprocess.run(["psql", "-X", "-h", server.host, "-p", str(server.port), "-U", "viewer",
                        "-d", "streamhouse", "-c", r"\dp orders"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert "viewer=r/streamhouse" in r.stdout and "streamhouse=raD/streamhouse" in r.stdout, \
        r.stdout


def test_two_agents_share_grants_through_the_postgres_metadata_store():
    args = shared_store_args("grants") + ["--auth", "password"]
    env = {"STREAMHOUSE_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(a_dir, args, env=env)
        b = Server(b_dir, args, env=env)
        try:
            with admin(a) as c:
                c.execute("CREATE STREAM shared (x bigint)")
                c.execute("INSERT INTO shared VALUES (1)")
                c.execute("CREATE USER ivy WITH PASSWORD 'i'")
            with connect(b, "ivy", "i") as ivy:
                with pytest.raises(errors.InsufficientPrivilege):
                    ivy.execute("SELECT x FROM shared")
                with admin(a) as c:
                    c.execute("GRANT SELECT ON shared TO ivy")
                # Granted through the other agent: counts on the next call.
                assert ivy.execute("SELECT x FROM shared").fetchall() == [(1,)]
                with admin(a) as c:
                    c.execute("REVOKE SELECT ON shared FROM ivy")
                # A revoke reaches the other agent by the store's
                # announcement, which it may not have read yet.
                deadline = time.monotonic() + 10
                while True:
                    try:
                        ivy.execute("SELECT x FROM shared").fetchall()
                    except errors.InsufficientPrivilege:
                        break
                    assert time.monotonic() < deadline, "the revoke never reached agent b"
                    time.sleep(0.05)
        finally:
            assert a.stop() == 0 and b.stop() == 0
