"""The web console in a real browser: Debian's Chromium driven by
Playwright (never a downloaded browser). Sign in, create a stream, see
its rows in the message browser, run a GROUP BY in the SQL editor and
compare it with psycopg's answer, make a view from a query and watch its
lag chart, see a consumer group's lag per partition, sign out, and a user
without rights sees the denial; produce and consume with the
simulator and reset its group. Each page's screenshot is saved under
$CARGO_TARGET_DIR/artifacts/console (or a temporary directory)."""

import os
import re
import tempfile

import pytest
from confluent_kafka import Consumer, TopicPartition
from playwright.sync_api import expect, sync_playwright

from conftest import password_server, superuser

PASSWORD = "admin-password"
CHROMIUM = "/usr/bin/chromium"
# Chromium's own connections to the internet are refused here, and
# would only slow it down.
CHROMIUM_ARGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def server():
    with password_server(PASSWORD) as s:
        with admin(s) as c:
            c.execute("CREATE USER viewer WITH PASSWORD 'v'")
        yield s


@pytest.fixture(scope="module")
def shots():
    base = os.environ.get("CARGO_TARGET_DIR")
    if base:
        d = os.path.join(base, "artifacts", "console")
        os.makedirs(d, exist_ok=True)
        yield d
    else:
        with tempfile.TemporaryDirectory() as d:
            yield d


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def admin(s):
    return superuser(s, PASSWORD)


def sign_in(page, server, user, password):
    page.goto(f"http://{server.http}/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#signin-user", user)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    expect(page.locator("#who")).to_have_text(f"Signed in as {user}")


def cells(table):
    """A table's body as rows of cell texts."""
    return table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_sign_in_create_a_stream_and_browse_its_messages(server, page, shots):
    # A wrong password is refused in the dialog.
    page.goto(f"http://{server.http}/")
    page.fill("#signin-user", "streamhouse")
    page.fill("#signin-password", "wrong")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).not_to_be_empty()

    sign_in(page, server, "streamhouse", PASSWORD)
    expect(page.locator("main table").first).to_contain_text("live")
    page.screenshot(path=os.path.join(shots, "overview.png"), full_page=True)

    page.goto(f"http://{server.http}/#/streams")
    page.fill("#new-stream-name", "orders")
    page.fill("#new-stream-columns", "id BIGINT, customer TEXT, amount DOUBLE PRECISION")
    page.fill("#new-stream-partitions", "2")
    page.click("#create-stream")
    expect(page.get_by_role("link", name="orders", exact=True)).to_be_visible()

    with admin(server) as c:
        with c.cursor().copy("COPY orders (id, customer, amount) FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"c{i % 7}", i * 0.5))
        # The fullest partition.
        part, in_p1 = c.execute("SELECT _partition, count(*) AS n FROM orders "
                                "GROUP BY _partition ORDER BY n DESC LIMIT 1").fetchone()
        last = c.execute("SELECT id, customer FROM orders WHERE _partition = %s "
                         "ORDER BY _offset DESC LIMIT 1", (part,)).fetchone()
    assert in_p1 > 100
    # The list, pushed by the server, shows the rows and their rate.
    row = page.locator("main tr", has=page.get_by_role("link", name="orders", exact=True))
    expect(row).to_contain_text("1,000")
    expect(row.locator("svg.sparkline")).not_to_have_attribute("data-max", "0")
    expect(row.locator("svg.sparkline")).to_have_attribute("data-points", re.compile(r"^([3-9]|\d\d)$"))
    page.screenshot(path=os.path.join(shots, "streams.png"), full_page=True)

    page.get_by_role("link", name="orders", exact=True).click()
    expect(page.locator("h1")).to_have_text("Stream orders")
    page.select_option("#browse-partition", str(part))
    page.click("#browse")
    expect(page.locator("#messages p")).to_have_text(
        f"offsets {in_p1 - 100} to {in_p1} of {in_p1} in partition {part}")
    rows = cells(page.locator("#messages table"))
    assert len(rows) == 100
    assert rows[-1][:2] == [str(last[0]), last[1]]
    page.locator("#messages tbody tr").last.click()
    expect(page.locator("#message-json")).to_contain_text(f'"customer": "{last[1]}"')
    # From an offset.
    page.fill("#browse-offset", "0")
    page.click("#browse")
    expect(page.locator("#messages p")).to_have_text(f"offsets 0 to 100 of {in_p1} in partition {part}")
    page.screenshot(path=os.path.join(shots, "messages.png"))

    # A live tail: rows committed afterwards are pushed to the page.
    page.fill("#browse-offset", "")
    page.check("#browse-tail")
    page.click("#browse")
    expect(page.locator("#messages p")).to_have_text(
        f"offsets {in_p1 - 100} to {in_p1} of {in_p1} in partition {part}")
    with admin(server) as c:
        # One append per statement, spread over the partitions in turn.
        for i in range(4):
            c.execute("INSERT INTO orders VALUES (%s, 'c3', 1.0)", (90_000 + i,))
        pushed = [i for (i,) in c.execute("SELECT id FROM orders WHERE _partition = %s AND id >= 90000 "
                                           "ORDER BY _offset", (part,)).fetchall()]
    assert pushed
    expect(page.locator("#messages p")).to_have_text(
        f"offsets {in_p1 - 100} to {in_p1 + len(pushed)} of {in_p1 + len(pushed)} "
        f"in partition {part}", timeout=15_000)
    assert cells(page.locator("#messages table"))[-1][0] == str(pushed[-1])
    page.uncheck("#browse-tail")


def test_the_sql_editor_answers_as_psql_does(server, page, shots):
    query = ("SELECT customer, count(*) AS n, sum(id) AS ids FROM orders "
             "GROUP BY customer ORDER BY customer")
    page.goto(f"http://{server.http}/#/sql")
    page.fill("#sql-text", query)
    page.click("#sql-run")
    expect(page.locator("#sql-result .row-count")).to_have_text("7 rows")
    shown = cells(page.locator("#sql-result table"))
    with admin(server) as c:
        expected = c.execute(query).fetchall()
    assert shown == [[customer, str(n), str(ids)] for customer, n, ids in expected]
    assert len(expected) == 7

    page.fill("#sql-text", "SELECT * FROM nowhere")
    page.click("#sql-run")
    expect(page.get_by_role("alert")).to_contain_text("SQLSTATE 42P01")

    # A syntax error points at its place, and the cursor goes there.
    text = "SELECT customer\nFROM orders\nWHERE ORDER BY customer"
    page.fill("#sql-text", text)
    page.click("#sql-run")
    expect(page.get_by_role("alert")).to_contain_text("SQLSTATE 42601")
    expect(page.locator("#sql-error-position")).to_have_text(
        "LINE 3: WHERE ORDER BY customer\n" + " " * len("LINE 3: WHERE ORDER ") + "^")
    assert page.eval_on_selector("#sql-text", "t => t.selectionStart") == text.index("BY")

    page.fill("#sql-text", "SELECT customer, count(*) AS n FROM orders GROUP BY customer")
    page.fill("#view-name", "per_customer")
    page.click("#create-view")
    expect(page.locator("#sql-result .tag")).to_have_text("CREATE MATERIALIZED VIEW")
    expect(page.locator("#sql-history li").first).to_contain_text("CREATE MATERIALIZED VIEW")
    page.screenshot(path=os.path.join(shots, "sql.png"), full_page=True)
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM per_customer").fetchone() == (7,)


def test_a_view_page_charts_its_lag(server, page, shots):
    page.goto(f"http://{server.http}/#/views")
    page.get_by_role("link", name="per_customer").click()
    expect(page.locator("#view-definition")).to_contain_text("GROUP BY customer")
    chart = page.locator("#view-lag-chart")
    with admin(server) as c:
        c.execute("INSERT INTO orders SELECT n, 'c' || (n % 7), 1.0 FROM generate_series(1000, 1999) AS t(n)")
    # The chart takes a point every two seconds.
    expect(chart).to_have_attribute("data-points", re.compile(r"^([3-9]|\d\d+)$"), timeout=20_000)
    page.screenshot(path=os.path.join(shots, "view.png"), full_page=True)


def test_consumer_groups_show_lag_per_partition(server, page, shots):
    consumer = Consumer({"bootstrap.servers": server.kafka, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "streamhouse",
                         "sasl.password": PASSWORD, "group.id": "billing",
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition("orders", 0, 10), TopicPartition("orders", 1, 20)],
                        asynchronous=False)
    finally:
        consumer.close()
    with admin(server) as c:
        ends = dict(c.execute("SELECT partition, high_watermark FROM streamhouse.partitions "
                              "WHERE stream = 'orders'").fetchall())
    page.goto(f"http://{server.http}/#/groups")
    table = page.locator("main table")
    expect(table).to_contain_text("billing")
    rows = [r for r in cells(table) if r[0] == "billing"]
    assert sorted((r[2], r[3], r[5]) for r in rows) == [
        ("0", "10", f"{ends[0] - 10:,}"), ("1", "20", f"{ends[1] - 20:,}")]
    expect(page.locator("svg[data-group=billing]")).to_be_visible()
    page.screenshot(path=os.path.join(shots, "groups.png"), full_page=True)

    # Reset the group to the earliest offsets, after the confirmation.
    page.once("dialog", lambda d: d.accept())
    page.fill("#reset-group", "billing")
    page.fill("#reset-stream", "orders")
    page.select_option("#reset-to", "earliest")
    page.click("#reset")
    expect(page.locator("#reset-done")).to_have_text(
        "Reset: partition 0 at 0, partition 1 at 0")
    expect(page.locator("main table")).to_contain_text(f"{ends[0]:,}")
    with admin(server) as c:
        assert c.execute("SELECT partition, committed FROM streamhouse.consumer_groups "
                         "WHERE \"group\" = 'billing' ORDER BY partition").fetchall() == [(0, 0), (1, 0)]


def test_the_simulator_produces_and_consumes(server, page, shots):
    with admin(server) as c:
        c.execute("CREATE STREAM visits (id bigint, page text, at timestamptz) "
                  "WITH (partitions = 3, key = 'id')")
    page.goto(f"http://{server.http}/#/simulator")
    page.fill("#sim-p-stream", "visits")
    page.fill("#sim-p-count", "2")
    page.fill("#sim-p-rate", "1000")
    page.fill("#sim-p-rows", "600")
    page.click("#sim-start-producers")
    clients = page.locator("#sim-clients table")
    expect(clients).to_contain_text("sim-producer-")
    expect(clients.locator("tr", has_text="finished")).to_have_count(2, timeout=30_000)
    with admin(server) as c:
        assert c.execute("SELECT count(*) FROM visits").fetchone() == (1200,)
        part, n = c.execute("SELECT _partition, count(*) AS n FROM visits "
                            "GROUP BY _partition ORDER BY n DESC LIMIT 1").fetchone()
        first = c.execute("SELECT id, page FROM visits WHERE _partition = %s "
                          "ORDER BY _offset LIMIT 1", (part,)).fetchone()
    partitions = page.locator("#sim-partitions table")
    expect(partitions).to_contain_text(f"{n:,}")

    # The rows in the message browser.
    page.goto(f"http://{server.http}/#/streams/visits")
    page.select_option("#browse-partition", str(part))
    page.fill("#browse-offset", "0")
    page.click("#browse")
    expect(page.locator("#messages p")).to_have_text(
        f"offsets 0 to {min(n, 100)} of {n} in partition {part}")
    assert cells(page.locator("#messages table"))[0][:2] == [str(first[0]), first[1]]
    assert first[1].startswith("page-")

    # Two slow consumers in a group: lag per partition, then stop them and
    # reset the group from the groups page.
    page.goto(f"http://{server.http}/#/simulator")
    page.fill("#sim-c-stream", "visits")
    page.fill("#sim-c-group", "watchers")
    page.fill("#sim-c-count", "2")
    page.fill("#sim-c-rate", "20")
    page.click("#sim-start-consumers")
    expect(clients.locator("tr", has_text="consumer")).to_have_count(2)
    lag = page.locator("#sim-lag table")
    expect(lag.locator("tr", has_text="watchers")).to_have_count(3, timeout=20_000)
    expect(page.locator("svg[data-group=watchers]")).to_be_visible()
    shown = {r[2]: r for r in cells(lag) if r[0] == "watchers"}
    with admin(server) as c:
        live = dict((p, (committed, lag)) for p, committed, lag in c.execute(
            "SELECT partition, committed, lag FROM streamhouse.consumer_groups "
            "WHERE \"group\" = 'watchers'").fetchall())
    assert set(shown) == {"0", "1", "2"}
    assert all(r[6].startswith("sim-consumer-") for r in shown.values())
    assert sum(lag for _, lag in live.values()) > 0
    page.screenshot(path=os.path.join(shots, "simulator.png"), full_page=True)

    page.once("dialog", lambda d: d.accept())
    page.click("#sim-stop-all")
    expect(page.locator("#sim-clients")).to_contain_text("No simulated clients run.")
    page.goto(f"http://{server.http}/#/groups")
    page.once("dialog", lambda d: d.accept())
    page.fill("#reset-group", "watchers")
    page.fill("#reset-stream", "visits")
    page.select_option("#reset-to", "earliest")
    page.click("#reset")
    expect(page.locator("#reset-done")).to_have_text(
        "Reset: partition 0 at 0, partition 1 at 0, partition 2 at 0")
    with admin(server) as c:
        assert c.execute("SELECT sum(lag) FROM streamhouse.consumer_groups "
                         "WHERE \"group\" = 'watchers'").fetchone() == (1200,)
        ends = c.execute("SELECT partition, high_watermark FROM streamhouse.partitions "
                         "WHERE stream = 'visits' ORDER BY partition").fetchall()
    # The stream's page: each partition's lag for the group.
    page.goto(f"http://{server.http}/#/streams/visits")
    groups = page.locator("#stream-groups table")
    expect(groups.locator("tr", has_text="watchers")).to_have_count(3)
    assert sorted((r[1], r[2], r[4]) for r in cells(groups)) == [
        (str(p), "0", f"{end:,}") for p, end in ends]
    page.screenshot(path=os.path.join(shots, "stream.png"))


def test_signing_out_and_a_user_without_rights_sees_the_denial(server, page, shots):
    page.goto(f"http://{server.http}/#/overview")
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    sign_in(page, server, "viewer", "v")
    expect(page.get_by_role("alert")).to_contain_text("SQLSTATE 42501")
    page.screenshot(path=os.path.join(shots, "denied.png"), full_page=True)
    page.goto(f"http://{server.http}/#/sql")
    page.fill("#sql-text", "SELECT * FROM orders")
    page.click("#sql-run")
    expect(page.get_by_role("alert")).to_contain_text("SQLSTATE 42501")
