"""Users, passwords and TLS on the PostgreSQL door, through real clients:
psql with sslmode=verify-full, psycopg (SCRAM-SHA-256, and -PLUS with
channel binding), asyncpg with an SSL context. The certificates are made
here by openssl, for this run only."""

import asyncio
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import tempfile
import time

import asyncpg
import psycopg
import pytest
from psycopg import errors

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Server, shared_store_args, _binary

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def certs():
    """A CA, and a server certificate it signed for localhost/127.0.0.1."""
    with tempfile.TemporaryDirectory() as d:
        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=streamhouse test CA", "-keyout", "ca.key", "-out", "ca.pem")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                "-keyout", "server.key", "-out", "server.csr")
        with open(os.path.join(d, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
        # Clients' certificates come from a CA of their own.
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=streamhouse test client CA", "-keyout", "clientca.key",
                "-out", "clientca.pem")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=streamhouse",
                "-keyout", "client.key", "-out", "client.csr")
        with open(os.path.join(d, "client.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", "client.csr", "-CA", "clientca.pem",
                "-CAkey", "clientca.key", "-CAcreateserial", "-days", "2",
                "-extfile", "client.ext", "-out", "client.pem")
        os.chmod(os.path.join(d, "client.key"), 0o600)
        names = ("ca", "server", "clientca", "client")
        yield {name: os.path.join(d, f"{name}.pem") for name in names} | {
            "key": os.path.join(d, "server.key"),
            "client_key": os.path.join(d, "client.key"),
        }


@pytest.fixture(scope="module")
def secure(certs):
    with tempfile.TemporaryDirectory() as d:
        s = Server(
            d,
            ["--auth", "password", "--tls-cert", certs["server"], "--tls-key", certs["key"],
             "--require-tls"],
            env={"STREAMHOUSE_PASSWORD": PASSWORD},
        )
        s.data_dir = d
        try:
            yield s
        finally:
            assert s.stop() == 0


def dsn(s, user="streamhouse", password=PASSWORD, **params):
    base = f"host=localhost port={s.port} dbname=streamhouse user={user}"
    if password is not None:
        base += f" password='{password}'"
    return base + "".join(f" {k}={v}" for k, v in params.items())


def refusal(s, *, ssl, user="streamhouse", password=PASSWORD):
    """The SQLSTATE a connection attempt is refused with (asyncpg reports
    it; libpq-based clients give only the message at connect)."""
    async def attempt():
        try:
            c = await asyncpg.connect(host="127.0.0.1", port=s.port, user=user,
                                      password=password, database="streamhouse", ssl=ssl)
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
        await c.close()
        return None, "connected"

    return asyncio.run(attempt())


def no_verify():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def psql(s, certs, sql, **params):
    conninfo = dsn(s, sslmode="verify-full", sslrootcert=certs["ca"], **params)
    return subprocess.run(["psql", conninfo, "-X", "-A", "-t", "-c", sql],
                          capture_output=True, text=True, timeout=30)


def test_psql_verifies_the_certificate_and_logs_in_with_scram(secure, certs):
    r = psql(secure, certs, "SELECT 40 + 2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    info = subprocess.run(
        ["psql", dsn(secure, sslmode="verify-full", sslrootcert=certs["ca"]), "-X",
         "-c", "\\conninfo"],
        capture_output=True, text=True, timeout=30)
    assert "SSL connection (protocol: TLSv1.3" in info.stdout, info.stdout + info.stderr


def test_a_wrong_password_is_28P01(secure, certs):
    code, message = refusal(secure, ssl=no_verify(), password="wrong")
    assert code == "28P01", message
    assert 'for user "streamhouse"' in message, message
    # An unknown user is answered the same way.
    code, message = refusal(secure, ssl=no_verify(), user="nobody")
    assert code == "28P01", message
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(dsn(secure, password="wrong", sslmode="require"))
    # The server keeps serving.
    r = psql(secure, certs, "SELECT 1")
    assert r.returncode == 0, r.stderr


def test_channel_binding_and_a_client_that_offers_only_cleartext(secure, certs):
    with psycopg.connect(dsn(secure, sslmode="verify-full", sslrootcert=certs["ca"],
                             channel_binding="require")) as c:
        assert c.execute("SELECT 'bound'").fetchone() == ("bound",)

    # On the wire: the server asks for SCRAM and nothing else, and a client
    # that answers with a cleartext password anyway is refused.
    def read_message(conn):
        head = b""
        while len(head) < 5:
            head += conn.recv(5 - len(head))
        body = b""
        length = struct.unpack("!i", head[1:])[0] - 4
        while len(body) < length:
            body += conn.recv(length - len(body))
        return head[:1], body

    sock = socket.create_connection(("127.0.0.1", secure.port), timeout=10)
    sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
    assert sock.recv(1) == b"S"
    conn = no_verify().wrap_socket(sock, server_hostname="localhost")
    params = b"user\0streamhouse\0database\0streamhouse\0\0"
    conn.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    kind, body = read_message(conn)
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10, (kind, body)  # SASL
    mechanisms = body[4:].split(b"\0")
    assert b"SCRAM-SHA-256" in mechanisms and b"SCRAM-SHA-256-PLUS" in mechanisms, body
    assert all(m.startswith(b"SCRAM") for m in mechanisms if m), body
    cleartext = PASSWORD.encode() + b"\0"
    conn.sendall(b"p" + struct.pack("!i", 4 + len(cleartext)) + cleartext)
    kind, body = read_message(conn)
    assert kind == b"E", (kind, body)
    conn.close()


def test_a_connection_without_tls_is_refused(secure):
    code, message = refusal(secure, ssl=False)
    assert code == "28000", message
    with pytest.raises(psycopg.OperationalError, match="TLS only"):
        psycopg.connect(dsn(secure, sslmode="disable"))


def test_asyncpg_over_tls(secure, certs):
    async def run():
        ctx = ssl.create_default_context(cafile=certs["ca"])
        c = await asyncpg.connect(host="localhost", port=secure.port, user="streamhouse",
                                  password=PASSWORD, database="streamhouse", ssl=ctx)
        try:
            return await c.fetchval("SELECT 'over tls'")
        finally:
            await c.close()

    assert asyncio.run(run()) == "over tls"


def test_users_are_created_changed_and_dropped(secure):
    with psycopg.connect(dsn(secure, sslmode="require"), autocommit=True) as admin:
        admin.execute("CREATE USER alice WITH PASSWORD 'first'")
        with pytest.raises(errors.DuplicateObject):
            admin.execute("CREATE USER alice WITH PASSWORD 'again'")
        admin.execute("CREATE USER IF NOT EXISTS alice")
        with psycopg.connect(dsn(secure, user="alice", password="first", sslmode="require")) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)

        admin.execute("ALTER ROLE alice WITH PASSWORD 'second'")
        code, _ = refusal(secure, ssl=no_verify(), user="alice", password="first")
        assert code == "28P01"
        psycopg.connect(dsn(secure, user="alice", password="second", sslmode="require")).close()

        # A role (not a user) may not log in, password or not.
        admin.execute("CREATE ROLE readers PASSWORD 'x'")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(secure, user="readers", password="x", sslmode="require"))
        admin.execute("ALTER ROLE alice NOLOGIN")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(secure, user="alice", password="second", sslmode="require"))

        admin.execute("DROP ROLE alice, readers")
        with pytest.raises(errors.UndefinedObject):
            admin.execute("DROP ROLE alice")
        admin.execute("DROP ROLE IF EXISTS alice")
        with pytest.raises(errors.DependentObjectsStillExist):
            admin.execute("DROP ROLE streamhouse")
        with pytest.raises(errors.ActiveSqlTransaction):
            with admin.transaction():
                admin.execute("CREATE ROLE inside_a_block")


def test_passwords_are_stored_only_as_scram_verifiers(secure):
    with psycopg.connect(dsn(secure, sslmode="require"), autocommit=True) as admin:
        admin.execute("CREATE USER bob WITH PASSWORD 'hunter2-secret'")
    db = sqlite3.connect(os.path.join(secure.data_dir, "metadata.db"))
    rows = dict(db.execute("SELECT name, verifier FROM roles").fetchall())
    db.close()
    assert set(rows) >= {"streamhouse", "bob", "pg_monitor"}
    # pg_monitor is a role, not a user: it has no password at all.
    assert rows.pop("pg_monitor") is None
    for name, verifier in rows.items():
        assert verifier.startswith("SCRAM-SHA-256$4096:"), (name, verifier)
    assert "hunter2-secret" not in rows["bob"]
    assert PASSWORD not in rows["streamhouse"]


def test_trust_beyond_loopback_is_refused_at_start():
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            [_binary(), "server", "--data-dir", d, "--pg-addr", "0.0.0.0:0",
             "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
             "--kafka-addr", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("STREAMHOUSE_")})
        assert r.returncode != 0
        assert "beyond loopback" in r.stderr and "--insecure" in r.stderr, r.stderr


def test_password_auth_without_any_password_is_refused_at_start():
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            [_binary(), "server", "--data-dir", d, "--auth", "password",
             "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--flight-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("STREAMHOUSE_")})
        assert r.returncode != 0
        assert "STREAMHOUSE_PASSWORD" in r.stderr, r.stderr


def test_flight_basic_credentials_give_a_bearer_token(secure, certs):
    import pyarrow.flight as fl

    assert secure.flight.startswith("grpc+tls://")
    with open(certs["ca"], "rb") as f:
        ca = f.read()
    client = fl.FlightClient(secure.flight, tls_root_certs=ca)
    with pytest.raises(fl.FlightUnauthenticatedError):
        list(client.list_actions())
    with pytest.raises(fl.FlightUnauthenticatedError):
        client.authenticate_basic_token("streamhouse", "wrong")
    header = client.authenticate_basic_token("streamhouse", PASSWORD)
    # The port speaks only TLS.
    plain = fl.FlightClient(secure.flight.replace("grpc+tls://", "grpc://"))
    with pytest.raises(fl.FlightError):
        plain.authenticate_basic_token("streamhouse", PASSWORD)
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
    assert list(client.list_actions(options=fl.FlightCallOptions(headers=[header])))
    forged = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")])
    with pytest.raises(fl.FlightUnauthenticatedError):
        list(client.list_actions(options=forged))

    # A changed password revokes the user's tokens.
    with psycopg.connect(dsn(secure, sslmode="require"), autocommit=True) as admin:
        admin.execute("CREATE USER carol WITH PASSWORD 'one'")
        carol = client.authenticate_basic_token("carol", "one")
        opts = fl.FlightCallOptions(headers=[carol])
        assert list(client.list_actions(options=opts))
        admin.execute("ALTER USER carol PASSWORD 'two'")
        with pytest.raises(fl.FlightUnauthenticatedError):
            list(client.list_actions(options=opts))
        admin.execute("DROP USER carol")


def test_adbc_flight_sql_logs_in_with_username_and_password(secure, certs):
    import adbc_driver_flightsql.dbapi as flightsql

    with open(certs["ca"]) as f:
        tls = {"adbc.flight.sql.client_option.tls_root_certs": f.read()}
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        with flightsql.connect(secure.flight, db_kwargs=tls, autocommit=True) as c, \
                c.cursor() as cur:
            cur.execute("SELECT 1")
    with flightsql.connect(
        secure.flight,
        db_kwargs={"username": "streamhouse", "password": PASSWORD} | tls,
        autocommit=True,
    ) as c, c.cursor() as cur:
        cur.execute("SELECT 6 * 7 AS answer")
        assert cur.fetchall() == [(42,)]


def test_http_admin_needs_a_token_except_for_probes(secure, certs):
    import base64
    import json
    import urllib.error
    import urllib.request

    base = f"https://{secure.http}"
    https = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=certs["ca"])))
    for probe in ("/live", "/ready", "/health"):
        with https.open(base + probe) as r:
            assert r.status == 200
    for path in ("/v1/streams", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as e:
            https.open(base + path)
        assert e.value.code == 401
    # Plain HTTP is not served on a TLS port.
    import http.client

    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://{secure.http}/live", timeout=5)
    bad = urllib.request.Request(
        base + "/v1/login", method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(b"streamhouse:nope").decode()})
    with pytest.raises(urllib.error.HTTPError) as e:
        https.open(bad)
    assert e.value.code == 401
    good = urllib.request.Request(
        base + "/v1/login", method="POST",
        headers={"Authorization": "Basic "
                 + base64.b64encode(f"streamhouse:{PASSWORD}".encode()).decode()})
    with https.open(good) as r:
        token = json.load(r)["token"]
    authed = urllib.request.Request(base + "/v1/streams",
                                    headers={"Authorization": f"Bearer {token}"})
    with https.open(authed) as r:
        assert r.status == 200


def test_the_cli_logs_in_over_tls(secure, certs):
    def cli(*args, password=PASSWORD):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMHOUSE_")}
        if password is not None:
            env["STREAMHOUSE_PASSWORD"] = password
        return subprocess.run(
            [_binary(), *args, "--server", secure.flight, "--tls-ca", certs["ca"]],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)

    r = cli("sql", "-c", "SELECT 20 + 22 AS answer", "--format", "json", "--user", "streamhouse")
    assert r.returncode == 0, r.stderr
    assert '"answer":42' in r.stdout.replace(" ", ""), r.stdout
    r = cli("sql", "-c", "SELECT 1", "--user", "streamhouse", password="wrong")
    assert r.returncode != 0 and "cannot log in as streamhouse" in r.stderr, r.stderr
    # No user: the server asks for a login.
    r = cli("sql", "-c", "SELECT 1")
    assert r.returncode != 0 and "authentication required" in r.stderr, r.stderr


def test_pg_roles_and_psql_du_show_the_stored_roles(secure, certs):
    with psycopg.connect(dsn(secure, sslmode="require"), autocommit=True) as admin:
        admin.execute("CREATE ROLE dana")
        admin.execute("CREATE USER erin WITH SUPERUSER PASSWORD 'e'")
        rows = admin.execute(
            "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles "
            "WHERE rolname IN ('streamhouse', 'dana', 'erin') ORDER BY 1").fetchall()
        assert rows == [("dana", False, False), ("erin", True, True),
                        ("streamhouse", True, True)]
        du = psql(secure, certs, "\\du")
        assert du.returncode == 0, du.stderr
        assert "dana" in du.stdout and "erin" in du.stdout, du.stdout
        admin.execute("DROP ROLE dana, erin")
        names = [r[0] for r in admin.execute("SELECT rolname FROM pg_roles").fetchall()]
        assert "dana" not in names and "erin" not in names


def test_two_agents_share_users_through_the_postgres_metadata_store():
    args = shared_store_args("users") + ["--auth", "password"]
    env = {"STREAMHOUSE_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(a_dir, args, env=env)
        b = Server(b_dir, args, env=env)
        try:
            def login(agent, user, password):
                return refusal(agent, ssl=False, user=user, password=password)[0]

            with psycopg.connect(dsn(a), autocommit=True) as admin:
                admin.execute("CREATE USER frank WITH PASSWORD 'f1'")
            assert login(b, "frank", "f1") is None
            with psycopg.connect(dsn(b), autocommit=True) as admin:
                admin.execute("ALTER USER frank WITH PASSWORD 'f2'")
            assert login(a, "frank", "f1") == "28P01"
            assert login(a, "frank", "f2") is None
            with psycopg.connect(dsn(a), autocommit=True) as admin:
                admin.execute("DROP USER frank")
            assert login(b, "frank", "f2") == "28P01"
        finally:
            assert a.stop() == 0 and b.stop() == 0


def test_the_audit_trail_records_logins_failures_and_ddl(secure):
    refusal(secure, ssl=no_verify(), user="mallory", password="guess")
    refusal(secure, ssl=False)
    with psycopg.connect(dsn(secure, sslmode="require"), autocommit=True) as admin:
        admin.execute("CREATE USER grace WITH PASSWORD 'never-in-the-trail'")
        admin.execute("CREATE STREAM audited (x BIGINT)")
        admin.execute("DROP STREAM audited")
        admin.execute("DROP USER grace")
        deadline = time.time() + 20
        while True:
            rows = admin.execute(
                "SELECT event, user_name, door, object, success FROM streamhouse.audit "
                "ORDER BY at").fetchall()
            events = {(r[0], r[1], r[4]) for r in rows}
            wanted = {("login_failed", "mallory", False), ("login_refused", "streamhouse", False),
                      ("login", "streamhouse", True), ("ddl", "streamhouse", True)}
            if wanted <= events or time.time() > deadline:
                break
            time.sleep(0.2)
        assert wanted <= events, rows
        ddl = [r[3] for r in rows if r[0] == "ddl"]
        assert "CREATE ROLE grace" in ddl and "DROP ROLE grace" in ddl, ddl
        assert any(d.startswith("CREATE STREAM audited") for d in ddl), ddl
        assert all("never-in-the-trail" not in (r[3] or "") for r in rows), rows
        # The trail is the system's: no one writes or drops it.
        with pytest.raises(psycopg.Error):
            admin.execute("INSERT INTO streamhouse.audit (event) VALUES ('forged')")
        with pytest.raises(psycopg.Error):
            admin.execute('DROP STREAM "__audit"')


NODE_TLS = r"""
const { Client } = require('pg');
const fs = require('fs');
(async () => {
  const [port, ca, password] = process.argv.slice(1);
  const options = { host: 'localhost', port: Number(port), user: 'streamhouse',
                    database: 'streamhouse', ssl: { ca: fs.readFileSync(ca) } };
  const c = new Client({ ...options, password });
  await c.connect();
  const r = await c.query("SELECT 'node over tls' AS v");
  await c.end();
  const wrong = new Client({ ...options, password: 'wrong' });
  let code = null;
  try { await wrong.connect(); } catch (e) { code = e.code; }
  console.log(r.rows[0].v + ' ' + code);
})().catch((e) => { console.error(e); process.exit(1); });
"""

JDBC_TLS = """
import java.sql.*;
public class Tls {
    public static void main(String[] a) throws Exception {
        String url = a[0];
        try (Connection c = DriverManager.getConnection(url, "streamhouse", a[1]);
             ResultSet r = c.createStatement().executeQuery("SELECT 'jdbc over tls'")) {
            r.next();
            String code = null;
            try { DriverManager.getConnection(url, "streamhouse", "wrong"); }
            catch (SQLException e) { code = e.getSQLState(); }
            System.out.println(r.getString(1) + " " + code);
        }
    }
}
"""


def test_node_postgres_and_pgjdbc_over_tls_with_scram(secure, certs):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    node = subprocess.run(
        ["node", "-e", NODE_TLS, str(secure.port), certs["ca"], PASSWORD],
        cwd=os.path.join(root, "tests", "node"), capture_output=True, text=True, timeout=60)
    assert node.returncode == 0, node.stderr
    assert node.stdout.strip() == "node over tls 28P01", node.stdout
    with tempfile.TemporaryDirectory() as d:
        source = os.path.join(d, "Tls.java")
        with open(source, "w") as f:
            f.write(JDBC_TLS)
        url = (f"jdbc:postgresql://localhost:{secure.port}/streamhouse"
               f"?sslmode=verify-full&sslrootcert={certs['ca']}")
        java = subprocess.run(
            ["java", "-cp", "/usr/share/java/postgresql.jar", source, url, PASSWORD],
            capture_output=True, text=True, timeout=120)
    assert java.returncode == 0, java.stdout + java.stderr
    assert java.stdout.strip() == "jdbc over tls 28P01", java.stdout


def test_client_certificates_are_required_on_every_door_with_a_client_ca(certs):
    """--tls-client-ca: a client without a certificate that CA signed is
    refused at the TLS handshake on every door; with one, it goes on to log
    in as usual."""
    import urllib.error
    import urllib.request

    import pyarrow.flight as fl

    with tempfile.TemporaryDirectory() as d:
        s = Server(
            d,
            ["--auth", "password", "--tls-cert", certs["server"], "--tls-key", certs["key"],
             "--tls-client-ca", certs["clientca"], "--require-tls"],
            env={"STREAMHOUSE_PASSWORD": PASSWORD},
        )
        try:
            with_cert = {"sslcert": certs["client"], "sslkey": certs["client_key"]}
            r = psql(s, certs, "SELECT 6 * 7", **with_cert)
            assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
            r = psql(s, certs, "SELECT 6 * 7")
            assert r.returncode != 0 and "certificate" in r.stderr, r.stderr

            with open(certs["ca"], "rb") as f:
                ca = f.read()
            with open(certs["client"], "rb") as f:
                chain = f.read()
            with open(certs["client_key"], "rb") as f:
                key = f.read()
            client = fl.FlightClient(s.flight, tls_root_certs=ca, cert_chain=chain,
                                     private_key=key)
            header = client.authenticate_basic_token("streamhouse", PASSWORD)
            assert list(client.list_actions(options=fl.FlightCallOptions(headers=[header])))
            bare = fl.FlightClient(s.flight, tls_root_certs=ca)
            with pytest.raises(fl.FlightError):
                bare.authenticate_basic_token("streamhouse", PASSWORD)

            context = ssl.create_default_context(cafile=certs["ca"])
            context.load_cert_chain(certs["client"], certs["client_key"])
            https = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
            with https.open(f"https://{s.http}/live") as r:
                assert r.status == 200
            plain = urllib.request.build_opener(urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=certs["ca"])))
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                plain.open(f"https://{s.http}/live", timeout=10)

            # Kafka: SASL over TLS with the client's certificate; without
            # one the handshake fails and nothing is listed.
            kafka = {"bootstrap.servers": s.kafka, "security.protocol": "SASL_SSL",
                     "ssl.ca.location": certs["ca"], "sasl.mechanism": "SCRAM-SHA-256",
                     "sasl.username": "streamhouse", "sasl.password": PASSWORD}
            admin = AdminClient({**kafka, "ssl.certificate.location": certs["client"],
                                 "ssl.key.location": certs["client_key"]})
            assert admin.list_topics(timeout=30).brokers
            bare = AdminClient(kafka)
            with pytest.raises(KafkaException):
                bare.list_topics(timeout=5)
        finally:
            assert s.stop() == 0


def test_each_door_can_have_its_own_method_and_certificate(certs):
    """--pg-auth and --pg-tls-cert/--pg-tls-key: passwords and TLS on the
    PostgreSQL door alone; Flight and the HTTP admin stay trusted and in
    plaintext on loopback."""
    import urllib.request

    import pyarrow.flight as fl

    with tempfile.TemporaryDirectory() as d:
        s = Server(
            d,
            ["--pg-auth", "password", "--pg-tls-cert", certs["server"],
             "--pg-tls-key", certs["key"], "--require-tls"],
            env={"STREAMHOUSE_PASSWORD": PASSWORD},
        )
        try:
            assert psql(s, certs, "SELECT 1").stdout.strip() == "1"
            assert refusal(s, ssl=no_verify(), password="wrong")[0] == "28P01"
            assert refusal(s, ssl=False)[0] == "28000"
            assert s.flight.startswith("grpc://")
            client = fl.FlightClient(s.flight)
            assert list(client.list_actions())
            with urllib.request.urlopen(f"http://{s.http}/v1/streams") as r:
                assert r.status == 200
        finally:
            assert s.stop() == 0


def test_the_kafka_door_over_tls_with_sasl(certs):
    """--kafka-auth password and --kafka-tls-cert/--kafka-tls-key: Kafka
    clients log in with SASL over TLS (SASL_SSL) and verify the server's
    certificate; a plaintext client, or one that does not trust the CA,
    gets nothing; kcat works over TLS too."""
    with tempfile.TemporaryDirectory() as d:
        s = Server(
            d,
            ["--kafka-auth", "password", "--kafka-tls-cert", certs["server"],
             "--kafka-tls-key", certs["key"]],
            env={"STREAMHOUSE_PASSWORD": PASSWORD},
        )
        try:
            host, port = s.kafka.rsplit(":", 1)
            boot = f"localhost:{port}"
            conf = {"bootstrap.servers": boot, "security.protocol": "SASL_SSL",
                    "ssl.ca.location": certs["ca"], "sasl.mechanism": "SCRAM-SHA-256",
                    "sasl.username": "streamhouse", "sasl.password": PASSWORD}
            admin = AdminClient(conf)
            admin.create_topics([NewTopic("sealed", 2, 1)])["sealed"].result(30)
            p = Producer({**conf, "acks": "all", "enable.idempotence": True})
            for i in range(100):
                p.produce("sealed", key=str(i).encode(), value=f"v{i}".encode(),
                          partition=i % 2)
            assert p.flush(30) == 0
            c = Consumer({**conf, "group.id": "sealed-readers",
                          "auto.offset.reset": "earliest", "enable.auto.commit": False})
            c.assign([TopicPartition("sealed", 0, 0), TopicPartition("sealed", 1, 0)])
            got = []
            deadline = time.time() + 60
            while len(got) < 100 and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None:
                    assert not m.error(), m.error()
                    got.append(m.value())
            c.close()
            assert sorted(got) == sorted(f"v{i}".encode() for i in range(100))
            # The same rows through SQL (PostgreSQL stays trusted, no TLS).
            with psycopg.connect(host="127.0.0.1", port=s.port, dbname="streamhouse",
                                 user="streamhouse") as pg:
                n = pg.execute("SELECT count(*) FROM sealed").fetchone()[0]
            assert n == 100

            # kcat (Debian's librdkafka 2.0: PLAIN, its SCRAM predates
            # librdkafka's nonce fix) over TLS.
            r = subprocess.run(
                ["kcat", "-b", boot, "-X", "security.protocol=sasl_ssl",
                 "-X", f"ssl.ca.location={certs['ca']}", "-X", "sasl.mechanisms=PLAIN",
                 "-X", "sasl.username=streamhouse", "-X", f"sasl.password={PASSWORD}",
                 "-C", "-t", "sealed", "-p", "0", "-o", "beginning", "-e", "-q"],
                capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert len(r.stdout.split()) == 50

            # Plaintext, or TLS without trusting the CA: no answer.
            for wrong in ({**conf, "security.protocol": "SASL_PLAINTEXT"},
                          {**conf, "ssl.ca.location": certs["clientca"]}):
                with pytest.raises(KafkaException):
                    AdminClient(wrong).list_topics(timeout=5)
            raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            raw.sendall(struct.pack(">ih", 10, 18) + b"\0" * 8)
            raw.settimeout(15)
            try:
                answer = raw.recv(100)
            except ConnectionResetError:
                answer = b""
            # Closed, or a TLS alert (record type 21): never a Kafka answer.
            assert answer == b"" or answer[0] == 21, answer
            raw.close()
            assert AdminClient(conf).list_topics(timeout=30).topics["sealed"]
        finally:
            assert s.stop() == 0
