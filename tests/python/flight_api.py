"""The producer/consumer API from pyarrow.flight, as the client tests use
it: uploads with per-batch options, and JSON actions."""

import json

import pyarrow as pa
import pyarrow.flight as flight


def produce(client, stream, batches, metadata=None, options=None):
    """Writes batches to a stream (the schema of the first) and returns the
    decoded acknowledgement of each. `metadata`: options for every batch
    (a dict), or one per batch (a list). `options`: the call's
    `FlightCallOptions` (a bearer token)."""
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("streams", stream),
                                   batches[0].schema, options=options)
    for i, b in enumerate(batches):
        options = metadata[i] if isinstance(metadata, list) else metadata
        if options is None:
            writer.write_batch(b)
        else:
            writer.write_with_metadata(b, pa.py_buffer(json.dumps(options).encode()))
    writer.done_writing()
    acks = []
    while (buf := reader.read()) is not None:
        acks.append(json.loads(buf.to_pybytes()))
    writer.close()
    return acks


def action(client, kind, body, options=None):
    """Runs a JSON action; its decoded results."""
    return [json.loads(r.body.to_pybytes())
            for r in client.do_action(flight.Action(kind, json.dumps(body).encode()),
                                      options=options)]
