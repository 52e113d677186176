"""The REST API of the HTTP port, through urllib: SQL answered as JSON
lines (errors with their SQLSTATE and status, row limits, privileges), a
stream partition's messages (paging, the latest, by time), views, groups,
who is signed in, signing out. The console uses nothing else."""

import http.client
import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import http_token, password_server, superuser

PASSWORD = "admin-password"


@pytest.fixture(scope="module")
def server():
    with password_server(PASSWORD) as s:
        with admin(s) as c:
            c.execute("CREATE STREAM events (id bigint, name text, at timestamptz) "
                      "WITH (partitions = 2, key = 'id')")
            c.execute("CREATE STREAM secrets (id bigint, note text)")
            c.execute("INSERT INTO secrets VALUES (1, 'swordfish')")
            c.execute("CREATE USER reader WITH PASSWORD 'r'")
            c.execute("GRANT SELECT ON events TO reader")
        yield s


def admin(s):
    return superuser(s, PASSWORD)


def token(s, user="streamhouse", password=PASSWORD):
    return http_token(s, user, password)


def call(s, path, tok, body=None, method=None):
    """(status, content type, body bytes) of one request."""
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    r = urllib.request.Request(f"http://{s.http}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(r) as answer:
            return answer.status, answer.headers.get("Content-Type"), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def run_sql(s, tok, sql, **extra):
    status, kind, body = call(s, "/v1/sql", tok, {"sql": sql, **extra})
    if status != 200:
        return status, json.loads(body)
    assert kind == "application/x-ndjson"
    return status, [json.loads(line) for line in body.decode().splitlines()]


def test_sql_answers_columns_rows_and_done_as_json_lines(server):
    tok = token(server)
    status, lines = run_sql(server, tok, "INSERT INTO events VALUES (1, 'a', now()), (2, NULL, now()), (3, 'c', now()); "
                                         "SELECT id, name FROM events ORDER BY id")
    assert status == 200
    assert lines[0] == {"done": {"tag": "INSERT 0 3"}}
    assert lines[1] == {"columns": [{"name": "id", "type": "Int64"}, {"name": "name", "type": "Utf8"}]}
    rows = [r for line in lines if "rows" in line for r in line["rows"]]
    assert rows == [[1, "a"], [2, None], [3, "c"]]
    assert lines[-1] == {"done": {"tag": "SELECT 3", "rows": 3, "truncated": False}}
    # What psql sees.
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_a_limit_truncates_and_says_so(server):
    tok = token(server)
    status, lines = run_sql(server, tok, "SELECT * FROM generate_series(1, 50) AS t(n)", limit=7)
    assert status == 200
    rows = [r for line in lines if "rows" in line for r in line["rows"]]
    assert rows == [[n] for n in range(1, 8)]
    assert lines[-1]["done"] == {"tag": "SELECT 7", "rows": 7, "truncated": True}
    status, lines = run_sql(server, tok, "SELECT * FROM generate_series(1, 7) AS t(n)", limit=7)
    assert lines[-1]["done"]["truncated"] is False
    for bad in (0, 100_001, -1):
        status, body = call(server, "/v1/sql", tok, {"sql": "SELECT 1", "limit": bad})[0:3:2]
        assert status in (400, 422), (bad, status)


def test_errors_carry_their_sqlstate_and_status(server):
    tok = token(server)
    status, body = run_sql(server, tok, "SELEC 1")
    assert (status, body["sqlstate"]) == (400, "42601") and "SELEC" in body["error"]
    assert body["position"] == {"line": 1, "column": 1}
    # Where a syntax error is, in the whole text.
    status, body = run_sql(server, tok, "SELECT 1;\nSELECT * FROM events WHERE ORDER BY id")
    assert (status, body["sqlstate"]) == (400, "42601")
    # (ORDER reads as a column name; the parser stops at BY.)
    assert body["position"] == {"line": 2, "column": len("SELECT * FROM events WHERE ORDER ") + 1}
    status, body = run_sql(server, tok, "SELECT * FROM nowhere")
    assert (status, body["sqlstate"]) == (404, "42P01") and "position" not in body
    status, body = run_sql(server, tok, "")
    assert status == 400
    # A later statement's error ends the answer; earlier ones stand.
    status, lines = run_sql(server, tok, "SELECT 1 AS one; SELECT * FROM nowhere; SELECT 2")
    assert status == 200
    assert lines[0] == {"columns": [{"name": "one", "type": "Int32"}]}
    assert lines[1] == {"rows": [[1]]}
    assert lines[2]["done"]["tag"] == "SELECT 1"
    assert lines[3]["error"]["sqlstate"] == "42P01" and len(lines) == 4
    # Not JSON, or no sql: refused without running anything.
    status = call(server, "/v1/sql", tok, {"query": "SELECT 1"})[0]
    assert status in (400, 422)


def test_signing_in_roles_privileges_and_signing_out(server):
    assert call(server, "/v1/sql", None, {"sql": "SELECT 1"})[0] == 401
    assert call(server, "/v1/whoami", None)[0] == 401
    tok = token(server, "reader", "r")
    status, _, body = call(server, "/v1/whoami", tok)
    assert status == 200
    assert json.loads(body) == {"user": "reader", "auth_required": True, "monitor": False}
    # SQL runs with the reader's privileges.
    status, lines = run_sql(server, tok, "SELECT count(*) AS n FROM events")
    assert status == 200 and lines[1]["rows"] == [[3]]
    status, body = run_sql(server, tok, "SELECT * FROM secrets")
    assert (status, body["sqlstate"]) == (403, "42501")
    assert call(server, "/v1/streams/secrets/messages", tok)[0] == 403
    assert call(server, "/v1/streams/events/messages", tok)[0] == 200
    # The admin API needs pg_monitor.
    for path in ("/v1/streams", "/v1/agents", "/v1/views", "/v1/groups", "/metrics"):
        assert call(server, path, tok)[0] == 403, path
    # The console signs in with a JSON body; a refusal does not ask the
    # browser for a Basic password.
    r = urllib.request.Request(f"http://{server.http}/v1/login", method="POST",
                               data=json.dumps({"user": "reader", "password": "r"}).encode())
    with urllib.request.urlopen(r) as answer:
        assert call(server, "/v1/whoami", json.load(answer)["token"])[0] == 200
    r = urllib.request.Request(f"http://{server.http}/v1/login", method="POST",
                               data=json.dumps({"user": "reader", "password": "wrong"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(r)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    # Signing out ends the token.
    assert call(server, "/v1/logout", tok, method="POST")[0] == 204
    assert call(server, "/v1/whoami", tok)[0] == 401


def test_messages_page_through_a_partition(server):
    tok = token(server)
    with admin(server) as c:
        c.execute("CREATE STREAM clicks (n bigint, at timestamptz)")
        with c.cursor().copy("COPY clicks (n, at) FROM STDIN") as copy:
            for n in range(250):
                copy.write_row((n, f"2026-01-01 00:00:{n % 60:02d}+00"))
    def page(query):
        status, _, body = call(server, f"/v1/streams/clicks/messages?{query}", tok)
        assert status == 200, body
        return json.loads(body)
    # Without an offset: the latest `limit`.
    last = page("partition=0&limit=10")
    assert (last["start"], last["next"], last["end"]) == (240, 250, 250)
    names = [c["name"] for c in last["columns"]]
    assert names[:2] == ["n", "at"] and "_offset" in names
    offset = names.index("_offset")
    assert [r[0] for r in last["rows"]] == list(range(240, 250))
    assert [r[offset] for r in last["rows"]] == list(range(240, 250))
    # Paging from the start reaches every row once.
    seen, at = [], 0
    while True:
        p = page(f"partition=0&offset={at}&limit=100")
        if not p["rows"]:
            break
        seen += [r[0] for r in p["rows"]]
        at = p["next"]
    assert seen == list(range(250))
    # Past the end: nothing, and where the end is.
    p = page("partition=0&offset=999")
    assert p["rows"] == [] and p["end"] == 250
    # By time: the first message at or after it.
    now_us = int(time.time() * 1_000_000)
    assert page(f"partition=0&time_us={now_us + 3_600_000_000}")["rows"] == []
    assert page("partition=0&time_us=0&limit=1")["rows"][0][0] == 0
    # Bad requests.
    assert call(server, "/v1/streams/clicks/messages?partition=5", tok)[0] == 400
    assert call(server, "/v1/streams/clicks/messages?limit=1001", tok)[0] == 400
    assert call(server, "/v1/streams/clicks/messages?partition=-1", tok)[0] == 400
    assert call(server, "/v1/streams/nowhere/messages", tok)[0] == 404


def read_event(answer):
    """The next event of a Server-Sent Events answer: (kind, data) with
    data parsed; comments skipped."""
    kind, data = "message", []
    while True:
        line = answer.readline().decode()
        assert line, "the event stream ended"
        line = line.rstrip("\n")
        if line == "":
            if data:
                return kind, json.loads("\n".join(data))
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def test_a_partitions_tail_is_pushed_as_it_is_committed(server):
    tok = token(server)
    with admin(server) as c:
        c.execute("CREATE STREAM taps (n bigint)")
        c.execute("INSERT INTO taps SELECT n FROM generate_series(0, 9) AS t(n)")
    conn = http.client.HTTPConnection(server.http, timeout=30)
    # From offset 5: what is there, then what comes.
    conn.request("GET", "/v1/streams/taps/tail?partition=0&offset=5",
                 headers={"Authorization": f"Bearer {tok}"})
    answer = conn.getresponse()
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/event-stream"
    kind, data = read_event(answer)
    assert kind == "columns"
    names = [c["name"] for c in data["columns"]]
    assert names[0] == "n" and "_offset" in names
    kind, data = read_event(answer)
    assert kind == "rows" and (data["start"], data["next"]) == (5, 10)
    assert [r[0] for r in data["rows"]] == [5, 6, 7, 8, 9]
    with admin(server) as c:
        c.execute("INSERT INTO taps VALUES (10), (11)")
        c.execute("INSERT INTO taps VALUES (12)")
    seen, at = [], 10
    while len(seen) < 3:
        kind, data = read_event(answer)
        assert kind == "rows" and data["start"] == at
        seen += [r[0] for r in data["rows"]]
        at = data["next"]
    assert seen == [10, 11, 12] and at == 13
    conn.close()
    # Refusals answer before the stream starts.
    def status(path, tok=tok):
        c = http.client.HTTPConnection(server.http, timeout=30)
        c.request("GET", path, headers={"Authorization": f"Bearer {tok}"})
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        return r.status, body
    code, body = status("/v1/streams/taps/tail?partition=3")
    assert code == 400 and "partition" in body["error"]
    assert status("/v1/streams/nowhere/tail")[0] == 404
    code, body = status("/v1/streams/secrets/tail", token(server, "reader", "r"))
    assert code == 403 and body["sqlstate"] == "42501"
    # The server keeps serving.
    assert run_sql(server, tok, "SELECT count(*) FROM taps")[1][1] == {"rows": [[13]]}


def test_views_and_groups_are_listed(server):
    tok = token(server)
    with admin(server) as c:
        c.execute("CREATE MATERIALIZED VIEW per_name AS SELECT name, count(*) AS n FROM events GROUP BY name")
    status, _, body = call(server, "/v1/views", tok)
    assert status == 200
    views = {v["name"]: v for v in json.loads(body)["views"]}
    assert "per_name" in views and "GROUP BY" in views["per_name"]["definition"]
    status, _, body = call(server, "/v1/agents", tok)
    (agent,) = json.loads(body)["agents"]
    assert views["per_name"]["owner"] == agent["id"]
    status, _, body = call(server, "/v1/groups", tok)
    assert status == 200 and json.loads(body) == {"consumer_groups": []}
    # A reset commits offsets for a group without live members.
    status, _, body = call(server, "/v1/groups/audit/reset", tok, {"stream": "events", "to": "latest"})
    assert status == 200, body
    ends = json.loads(body)["offsets"]
    assert sorted(o["partition"] for o in ends) == [0, 1] and sum(o["offset"] for o in ends) == 3
    status, _, body = call(server, "/v1/groups", tok)
    rows = json.loads(body)["consumer_groups"]
    assert sorted((r["partition"], r["lag"]) for r in rows) == [(0, 0), (1, 0)]
    status, _, body = call(server, "/v1/groups/audit/reset", tok, {"stream": "events", "to": 1})
    assert status == 200 and {o["offset"] for o in json.loads(body)["offsets"]} <= {0, 1}
    assert call(server, "/v1/groups/audit/reset", tok, {"stream": "events", "to": "someday"})[0] == 400
    assert call(server, "/v1/groups/audit/reset", tok, {"stream": "nowhere", "to": "latest"})[0] == 404
    reader = token(server, "reader", "r")
    assert call(server, "/v1/groups/audit/reset", reader, {"stream": "events", "to": "latest"})[0] == 403


def test_one_stream_shows_its_partitions_and_each_groups_lag(server):
    tok = token(server)
    with admin(server) as c:
        c.execute("CREATE STREAM meters (n bigint) WITH (partitions = 2)")
        for n in range(0, 100, 10):
            c.execute(f"INSERT INTO meters SELECT n FROM generate_series({n}, {n + 9}) AS t(n)")
        held = {p: (end, size) for p, end, size in c.execute(
            "SELECT partition, high_watermark, bytes FROM streamhouse.partitions "
            "WHERE stream = 'meters'").fetchall()}
    assert sum(end for end, _ in held.values()) == 100
    status, _, body = call(server, "/v1/groups/meter-readers/reset", tok, {"stream": "meters", "to": "earliest"})
    assert status == 200, body
    status, _, body = call(server, "/v1/streams/meters", tok)
    assert status == 200, body
    s = json.loads(body)
    assert (s["name"], s["partitions"], s["rows"]) == ("meters", 2, 100)
    assert {p["partition"]: (p["end_offset"], p["bytes"]) for p in s["partition_stats"]} == held
    assert s["bytes"] == sum(size for _, size in held.values()) > 0
    assert all(p["start_offset"] == 0 and p["chunks"] > 0 and p["last_append_us"] > 0
               for p in s["partition_stats"])
    assert sorted((g["group"], g["partition"], g["committed"], g["lag"]) for g in s["groups"]) == [
        ("meter-readers", p, 0, held[p][0]) for p in sorted(held)]
    # The list says the same, from one query over every stream.
    status, _, body = call(server, "/v1/streams", tok)
    listed = {x["name"]: x for x in json.loads(body)["streams"]}
    assert listed["meters"]["rows"] == 100 and listed["meters"]["bytes"] == s["bytes"]
    assert listed["meters"]["partition_ends"] == [held[0][0], held[1][0]]
    assert listed["secrets"]["rows"] == 1
    # Refusals.
    assert call(server, "/v1/streams/nowhere", tok)[0] == 404
    reader = token(server, "reader", "r")
    status, _, body = call(server, "/v1/streams/secrets", reader)
    assert status == 403 and json.loads(body)["sqlstate"] == "42501"
    assert call(server, "/v1/streams/events", reader)[0] == 200


def test_any_answer_is_pushed_by_a_watch(server):
    tok = token(server)
    with admin(server) as c:
        c.execute("CREATE STREAM pulses (n bigint)")
    def open_watch(query, tok=tok):
        conn = http.client.HTTPConnection(server.http, timeout=30)
        conn.request("GET", f"/v1/watch?{query}", headers={"Authorization": f"Bearer {tok}"})
        return conn, conn.getresponse()
    conn, answer = open_watch("path=%2Fv1%2Fstreams%2Fpulses&every_ms=250")
    assert answer.status == 200 and answer.headers["Content-Type"] == "text/event-stream"
    kind, data = read_event(answer)
    assert kind == "answer" and data["name"] == "pulses" and data["rows"] == 0
    with admin(server) as c:
        c.execute("INSERT INTO pulses VALUES (1), (2), (3)")
    seen = []
    while not seen or seen[-1] != 3:
        kind, data = read_event(answer)
        assert kind == "answer"
        seen.append(data["rows"])
        assert len(seen) < 40, f"the inserted rows were not pushed: {seen}"
    conn.close()
    # A text answer arrives as a JSON string.
    conn, answer = open_watch("path=%2Fmetrics&every_ms=250")
    kind, data = read_event(answer)
    assert kind == "answer" and isinstance(data, str) and "streamhouse_appended_rows_total" in data
    conn.close()
    # Signed out mid-watch: an error event, then the end.
    mine = token(server)
    conn, answer = open_watch("path=%2Fv1%2Fagents&every_ms=250", mine)
    kind, data = read_event(answer)
    assert kind == "answer" and len(data["agents"]) == 1
    assert call(server, "/v1/logout", mine, method="POST")[0] == 204
    while kind == "answer":
        kind, data = read_event(answer)
    assert (kind, data["status"]) == ("error", 401) and "authentication" in data["error"]
    assert answer.read() == b""
    conn.close()
    # Refusals come before the stream starts, with the watched answer's status.
    def refused(query, tok=tok):
        conn, answer = open_watch(query, tok)
        body = json.loads(answer.read())
        conn.close()
        assert body.get("status", answer.status) == answer.status
        if answer.status == 403:
            assert body["sqlstate"] == "42501"
        return answer.status, body["error"]
    assert refused("path=%2Fv1%2Fstreams%2Fnowhere")[0] == 404
    reader = token(server, "reader", "r")
    code, error = refused("path=%2Fv1%2Fstreams%2Fsecrets", reader)
    assert code == 403 and "permission denied" in error
    assert refused("path=%2Fv1%2Fgroups", reader)[0] == 403
    code, error = refused("path=%2Fv1%2Fagents&every_ms=10")
    assert code == 400 and "every_ms" in error
    code, error = refused("path=%2Fv1%2Fwatch%3Fpath%3D%252Fv1%252Fagents")
    assert code == 400 and "cannot be watched" in error
    assert refused("path=%2Fv1%2Fstreams%2Fpulses%2Ftail")[0] == 400
    assert refused("path=http%3A%2F%2Fexample.com%2F")[0] == 400
    assert refused("path=%2F%2Fexample.com%2F")[0] == 400
    # The server keeps serving.
    assert run_sql(server, tok, "SELECT count(*) FROM pulses")[1][1] == {"rows": [[3]]}
