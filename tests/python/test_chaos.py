"""The chaos suite's bounded run (tests/python/chaos.py): two agents over
the S3-compatible server and PostgreSQL, writers through every door, a
consumer group and a view, under a nemesis of kills, pauses past the
leases, and outages and slowdowns of both stores — then the checker finds
no anomaly, and every kind of fault was injected. `scripts/chaos SECONDS`
runs it for longer."""

import json
import os

import chaos


def test_a_bounded_chaos_run_finds_no_anomaly(tmp_path):
    seconds = float(os.environ.get("STREAMHOUSE_CHAOS_SECONDS", "60"))
    report = chaos.run(seconds, agents=2, workdir=str(tmp_path))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    assert report["anomalies"] == [], text
    assert set(report["faults"]) == set(chaos.FAULTS), text
    for door in ("insert", "copy", "flight", "txn"):
        assert report["writes_by_door"].get(door, 0) > 0, text
    assert report["rows_in_log"] >= report["rows_acknowledged"], text
    assert report["rows_seen_by_consumers"] > 0, text
    assert report["transactions_aborted"] > 0, text
