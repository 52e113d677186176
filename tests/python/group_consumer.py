"""A consumer-group member, written with pyarrow only (the way the docs
show it): joins, reads its partitions from the group's committed offsets,
commits after each batch, and writes the records it committed as JSON lines.

Usage: group_consumer.py FLIGHT_URI STREAM GROUP MEMBER OUT_FILE LIMIT
It stops abruptly (os._exit, no leave) after committing LIMIT records, to
stand for a crash; LIMIT 0 means read to the end and exit normally.
"""

import json
import os
import sys
import time

import pyarrow.flight as flight

uri, stream, group, member, out_path, limit = sys.argv[1:7]
limit = int(limit)
client = flight.connect(uri)


def action(kind, body):
    results = client.do_action(flight.Action(kind, json.dumps(body).encode()))
    return [json.loads(r.body.to_pybytes()) for r in results]


# Join first, then wait for the expected number of members, so that the
# partitions are split before anyone reads.
action("join_group", {"group": group, "stream": stream, "member": member})
want = int(os.environ.get("GROUP_SIZE", "1"))
deadline = time.time() + 30
while True:
    (state,) = action("describe_group", {"group": group})
    if len(state["members"]) >= want:
        break
    if time.time() > deadline:
        sys.exit(f"only {len(state['members'])} members joined")
    action("heartbeat", {"group": group, "member": member})
    time.sleep(0.05)

taken = 0
with open(out_path, "a") as out:
    while True:
        ticket = {"stream": stream, "group": group, "member": member}
        try:
            reader = client.do_get(flight.Ticket(json.dumps(ticket).encode()))
            for chunk in reader:
                rows = chunk.data.to_pylist()
                if limit:
                    rows = rows[: limit - taken]
                last = {}
                for r in rows:
                    last[r["_partition"]] = r["_offset"] + 1
                assignment = action("heartbeat", {"group": group, "member": member})[0]
                action("commit_offsets", {
                    "group": group, "stream": stream, "member": member,
                    "generation": assignment["generation"],
                    "offsets": {str(p): o for p, o in last.items()},
                })
                for r in rows:
                    out.write(json.dumps([member, r["_partition"], r["_offset"], r["id"]]) + "\n")
                out.flush()
                taken += len(rows)
                if limit and taken >= limit:
                    os._exit(0)
            break
        except flight.FlightError as e:
            # A rebalance ends the read (ABORTED) or fences a commit; read
            # again from the committed offsets.
            if "rebalanced" in str(e) or "not assigned" in str(e) or "generation" in str(e):
                continue
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid for FAILED_PRECONDITION
            if "not assigned" in str(e) or "generation" in str(e):
                continue
            raise
