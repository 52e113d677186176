"""A read-process-write producer, written with pyarrow only (the way the
docs show it): starts as a transactional producer, reads a stream from a
consumer group's committed offsets, writes each row to two streams, and
commits those writes with the group's new offsets in one transaction.

Usage: txn_producer.py FLIGHT_URI TRANSACTIONAL_ID INPUT OUT_A OUT_B GROUP MODE
MODE "stage": print "staged EPOCH" once the writes are staged, then wait
(to be killed before committing). MODE "commit": print "committed EPOCH"
once the commit is acknowledged, then wait (to be killed after it).
"""

import json
import sys
import time

import pyarrow as pa
import pyarrow.flight as flight

uri, txn_id, source, out_a, out_b, group, mode = sys.argv[1:8]
client = flight.connect(uri)


def action(kind, body):
    results = client.do_action(flight.Action(kind, json.dumps(body).encode()))
    return [json.loads(r.body.to_pybytes()) for r in results]


(started,) = action("init_transactions", {"transactional_id": txn_id})
epoch = started["epoch"]
meta = pa.py_buffer(json.dumps({"transactional_id": txn_id, "epoch": epoch}).encode())

table = client.do_get(flight.Ticket(json.dumps({"stream": source, "group": group}).encode())).read_all()
next_offsets = {}
for p, o in zip(table.column("_partition").to_pylist(), table.column("_offset").to_pylist()):
    next_offsets[str(p)] = max(next_offsets.get(str(p), 0), o + 1)
rows = table.select(["id", "name", "amount"])

for stream, scale in [(out_a, 10), (out_b, 1)]:
    out = pa.table({
        "id": pa.array([i * scale for i in rows.column("id").to_pylist()], pa.int64()),
        "name": rows.column("name"),
        "amount": rows.column("amount"),
    }, schema=rows.schema)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("streams", stream), out.schema)
    for b in out.to_batches(max_chunksize=100):
        writer.write_with_metadata(b, meta)
    writer.done_writing()
    while (ack := reader.read()) is not None:
        assert json.loads(ack.to_pybytes())["staged"] is True
    writer.close()

if mode == "stage":
    print(f"staged {epoch}", flush=True)
else:
    action("commit_transaction", {
        "transactional_id": txn_id, "epoch": epoch,
        "offsets": [{"group": group, "stream": source, "offsets": next_offsets}],
    })
    print(f"committed {epoch}", flush=True)
while True:
    time.sleep(1)
