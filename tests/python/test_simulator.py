"""The simulator's REST API (/v1/simulator): producers that write
generated rows at a rate, consumers in a group that read at a rate; their
rows, groups, members and offsets seen through psycopg and the other
endpoints; a group's lag growing while its consumers are slow and
shrinking when more join; rebalances when one stops or is added; limits,
bad requests and privileges."""

import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import http_token, password_server, superuser, wait_for

PASSWORD = "admin-password"


@pytest.fixture(scope="module")
def server():
    with password_server(PASSWORD) as s:
        with admin(s) as c:
            c.execute("CREATE STREAM shop (id bigint NOT NULL, customer text NOT NULL, "
                      "amount numeric(10, 2), paid boolean, at timestamptz NOT NULL) "
                      "WITH (partitions = 4, key = 'id')")
            c.execute("CREATE STREAM clicks (page text, at timestamptz) WITH (partitions = 4)")
            c.execute("CREATE STREAM ticks (n bigint)")
            c.execute("CREATE USER writer WITH PASSWORD 'w'")
            c.execute("CREATE STREAM notes (n bigint)")
            c.execute("GRANT INSERT ON notes TO writer")
            c.execute("CREATE USER nobody WITH PASSWORD 'n'")
        yield s


def admin(s):
    return superuser(s, PASSWORD)


def token(s, user="streamhouse", password=PASSWORD):
    return http_token(s, user, password)


def call(s, tok, path, body=None, method=None):
    """(status, JSON body) of one request."""
    headers = {"Authorization": f"Bearer {tok}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    r = urllib.request.Request(f"http://{s.http}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(r) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def clients(s, tok):
    status, body = call(s, tok, "/v1/simulator")
    assert status == 200, body
    return {c["id"]: c for c in body["clients"]}


def group_rows(s, group):
    with admin(s) as c:
        return c.execute("SELECT partition, committed, high_watermark, lag, member, generation "
                         "FROM streamhouse.consumer_groups WHERE \"group\" = %s ORDER BY partition",
                         (group,)).fetchall()


def total_lag(s, group):
    return sum(r[3] for r in group_rows(s, group))


def test_producers_write_generated_rows_of_the_streams_columns(server):
    tok = token(server)
    status, body = call(server, tok, "/v1/simulator/producers",
                        {"stream": "shop", "count": 2, "rate": 2000, "rows": 1500})
    assert status == 201, body
    ids = [c["id"] for c in body["clients"]]
    assert len(ids) == 2 and all(i.startswith("sim-producer-") for i in ids)
    assert all(c["kind"] == "producer" and c["rate"] == 2000 for c in body["clients"])
    done = wait_for(lambda: all(clients(server, tok)[i]["state"] == "finished" for i in ids)
                    and clients(server, tok), "both producers to finish")
    assert [done[i]["rows"] for i in ids] == [1500, 1500]
    with admin(server) as c:
        n, filled, customers, partitions, lo, hi = c.execute(
            "SELECT count(*), least(count(amount), count(paid)), count(DISTINCT customer), "
            "count(DISTINCT _partition), min(id), max(id) FROM shop").fetchone()
        assert n == 3000
        assert filled == n
        assert 100 < customers <= 1000
        assert partitions == 4
        assert 0 <= lo and hi < 1000
        assert c.execute("SELECT count(*) FROM shop WHERE customer NOT LIKE 'customer-%'").fetchone() == (0,)
        # Stamped with the time they were written.
        assert c.execute("SELECT count(*) FROM shop WHERE at < now() - interval '5 minutes' "
                         "OR at > now()").fetchone() == (0,)
    # Finished producers stay listed until stopped; stopping answers them.
    status, body = call(server, tok, f"/v1/simulator/clients/{ids[0]}", method="DELETE")
    assert status == 200 and body["client"]["rows"] == 1500 and body["client"]["state"] == "finished"
    assert ids[0] not in clients(server, tok)
    status, body = call(server, tok, f"/v1/simulator/clients/{ids[0]}", method="DELETE")
    assert status == 404 and ids[0] in body["error"]
    call(server, tok, "/v1/simulator", method="DELETE")


def test_a_groups_lag_grows_with_slow_consumers_and_shrinks_as_more_join(server):
    tok = token(server)
    status, body = call(server, tok, "/v1/simulator/producers", {"stream": "clicks", "rate": 400})
    assert status == 201, body
    producer = body["clients"][0]["id"]
    # One consumer held to 40 rows/s: the group falls behind.
    status, body = call(server, tok, "/v1/simulator/consumers",
                        {"stream": "clicks", "group": "readers", "rate": 40})
    assert status == 201, body
    slow = body["clients"][0]["id"]
    assert slow.startswith("sim-consumer-")
    wait_for(lambda: clients(server, tok)[slow]["partitions"] == [0, 1, 2, 3],
             "the only member to own every partition")
    wait_for(lambda: total_lag(server, "readers") > 1000, "the lag to grow past 1,000")
    before = total_lag(server, "readers")
    time.sleep(2)
    assert total_lag(server, "readers") > before, "the lag grows while the consumer is slower"
    assert {r[4] for r in group_rows(server, "readers")} == {slow}

    # Three more, as fast as they can: a rebalance gives each member one
    # partition, and the three catch up on theirs.
    status, body = call(server, tok, "/v1/simulator/consumers",
                        {"stream": "clicks", "group": "readers", "count": 3})
    assert status == 201, body
    fast = [c["id"] for c in body["clients"]]

    def spread():
        cs = clients(server, tok)
        owned = [cs[i]["partitions"] for i in [slow, *fast]]
        gens = {cs[i]["generation"] for i in [slow, *fast]}
        return len(gens) == 1 and sorted(p for ps in owned for p in ps) == [0, 1, 2, 3] \
            and all(len(ps) == 1 for ps in owned)

    wait_for(spread, "the four members to own one partition each")
    generation = clients(server, tok)[slow]["generation"]
    assert clients(server, tok)[slow]["rebalances"] >= 2
    assert {r[4] for r in group_rows(server, "readers")} == {slow, *fast}
    wait_for(lambda: sum(r[3] for r in group_rows(server, "readers") if r[4] != slow) < 200,
             "the fast members' partitions to catch up")

    # The slow one stops: it leaves the group, the three left own every
    # partition in a new generation, and the group's lag shrinks.
    status, body = call(server, tok, f"/v1/simulator/clients/{slow}", method="DELETE")
    assert status == 200 and body["client"]["state"] == "stopped"
    taken_by_slow = body["client"]["rows"]

    def rebalanced():
        cs = clients(server, tok)
        owned = sorted(p for i in fast for p in cs[i]["partitions"])
        return owned == [0, 1, 2, 3] and all(cs[i]["generation"] > generation for i in fast)

    wait_for(rebalanced, "the three left to own every partition in a new generation")
    wait_for(lambda: total_lag(server, "readers") < 200, "the lag to shrink")

    # The producer stops; the group reads to the end and commits it.
    status, body = call(server, tok, f"/v1/simulator/clients/{producer}", method="DELETE")
    assert status == 200
    produced = body["client"]["rows"]
    assert produced > 1000
    wait_for(lambda: total_lag(server, "readers") == 0, "the group to catch up")
    rows = group_rows(server, "readers")
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM clicks").fetchone() == (produced,)
    assert sum(r[2] for r in rows) == produced
    assert all(r[1] == r[2] for r in rows)
    # Every row was consumed at least once (a rebalance may hand a member
    # rows its predecessor took but had not committed).
    cs = clients(server, tok)
    assert taken_by_slow + sum(cs[i]["rows"] for i in fast) >= produced
    status, body = call(server, tok, "/v1/simulator", method="DELETE")
    assert status == 200 and body["stopped"] == 3
    # Stopped members left: the group has no live members.
    wait_for(lambda: all(r[4] is None for r in group_rows(server, "readers")), "the members to leave")


def test_bad_requests_and_limits(server):
    tok = token(server)
    bad = [
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 0}, 400, "rate"),
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 100_001}, 400, "rate"),
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 1, "count": 0}, 400, "count"),
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 1, "count": 17}, 400, "count"),
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 1, "rows": 0}, 400, "rows"),
        ("/v1/simulator/producers", {"stream": "ticks", "rate": 1, "colour": "red"}, 400, "colour"),
        ("/v1/simulator/producers", {"stream": "nowhere", "rate": 1}, 404, "nowhere"),
        ("/v1/simulator/producers", {"rate": 1}, 400, "stream"),
        ("/v1/simulator/consumers", {"stream": "ticks"}, 400, "group"),
        ("/v1/simulator/consumers", {"stream": "ticks", "group": "g", "rate": 0}, 400, "rate"),
        ("/v1/simulator/consumers", {"stream": "ticks", "group": "g", "from": "soon"}, 400, "soon"),
        ("/v1/simulator/consumers", {"stream": "nowhere", "group": "g"}, 404, "nowhere"),
    ]
    for path, body, code, word in bad:
        status, answer = call(server, tok, path, body)
        assert status == code, (body, status, answer)
        assert word in answer["error"], (body, answer)
    status, answer = call(server, tok, "/v1/simulator/producers", None, method="POST")
    assert status == 400
    assert clients(server, tok) == {}

    # At most 64 at once.
    for _ in range(4):
        status, body = call(server, tok, "/v1/simulator/producers", {"stream": "ticks", "rate": 1, "count": 16})
        assert status == 201, body
    status, body = call(server, tok, "/v1/simulator/producers", {"stream": "ticks", "rate": 1})
    assert status == 429 and "64" in body["error"]
    assert len(clients(server, tok)) == 64
    status, body = call(server, tok, "/v1/simulator", method="DELETE")
    assert status == 200 and body["stopped"] == 64
    assert clients(server, tok) == {}
    # The server is fine.
    with admin(server) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_privileges(server):
    root, writer, nobody = token(server), token(server, "writer", "w"), token(server, "nobody", "n")
    status, body = call(server, nobody, "/v1/simulator/producers", {"stream": "notes", "rate": 10})
    assert status == 403 and body["sqlstate"] == "42501"
    status, body = call(server, nobody, "/v1/simulator/consumers", {"stream": "notes", "group": "g"})
    assert status == 403 and body["sqlstate"] == "42501"
    status, body = call(server, writer, "/v1/simulator/producers", {"stream": "notes", "rate": 10})
    assert status == 201, body
    mine = body["clients"][0]
    assert mine["owner"] == "writer"
    # Its starter and a monitor see it; another role does not, nor stops it.
    assert list(clients(server, writer)) == [mine["id"]]
    assert mine["id"] in clients(server, root)
    assert clients(server, nobody) == {}
    status, body = call(server, nobody, f"/v1/simulator/clients/{mine['id']}", method="DELETE")
    assert status == 403
    status, body = call(server, nobody, "/v1/simulator", method="DELETE")
    assert status == 200 and body["stopped"] == 0
    wait_for(lambda: clients(server, writer)[mine["id"]]["rows"] > 0, "the writer's rows")
    status, body = call(server, writer, f"/v1/simulator/clients/{mine['id']}", method="DELETE")
    assert status == 200
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM notes").fetchone() == (body["client"]["rows"],)
