"""The chaos suite's bounded run (tests/python/chaos.py): two agents over
the S3-compatible server and a PostgreSQL server of the suite's own,
writers through every door, Flight and Kafka consumer groups and a view,
under a nemesis of kills, pauses past the leases, clock jumps, outages,
slowdowns and packet loss of both stores and PostgreSQL restarts — then
the checker finds no anomaly, and every kind of fault was injected.
`scripts/chaos SECONDS` runs it for longer."""

import json
import os

import chaos


def test_a_bounded_chaos_run_finds_no_anomaly(tmp_path):
    seconds = float(os.environ.get("STREAMHOUSE_CHAOS_SECONDS", "75"))
    report = chaos.run(seconds, agents=2, workdir=str(tmp_path))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    assert report["anomalies"] == [], text
    assert set(report["faults"]) == set(chaos.FAULTS), text
    for door in ("insert", "copy", "flight", "txn", "kafka", "ktxn"):
        assert report["writes_by_door"].get(door, 0) > 0, text
    assert report["rows_in_log"] >= report["rows_acknowledged"], text
    for member in ("reader-1", "reader-2", "kafka-reader-1", "kafka-reader-2"):
        assert report["rows_seen_by_member"].get(member, 0) > 0, text
    assert report["transactions_aborted"] > 0, text
