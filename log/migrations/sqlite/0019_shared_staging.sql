-- Transactional rows staged by an agent other than the one their producer
-- started on (a Kafka client sends each partition's records to that
-- partition's leader): the rows are an object in the store, recorded here
-- until the transaction that staged them commits or aborts.
--
-- `txn_no` counts a producer's transactions within its epoch: a commit or
-- an abort moves it on, so rows staged for a transaction that has ended
-- never join the next one.
ALTER TABLE transactional_producers ADD COLUMN txn_no INTEGER NOT NULL DEFAULT 0;

CREATE TABLE shared_staged (
    transactional_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    txn_no INTEGER NOT NULL,
    -- The object holding the rows, or a unique name for group offsets.
    object TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    stream_name TEXT NOT NULL,
    partition_no INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    -- Group offsets committed with the transaction (JSON), for a
    -- TxnOffsetCommit; NULL for rows.
    offsets TEXT,
    -- The batch's run of producer sequences, when it has one (a retry
    -- reaching another agent after a partition's leader moved is the same
    -- run: the commit keeps one).
    first_seq INTEGER,
    last_seq INTEGER,
    staged_at_us INTEGER NOT NULL,
    PRIMARY KEY (transactional_id, object)
);
CREATE INDEX shared_staged_object ON shared_staged (object);

-- The next sequence of each partition a transactional producer staged
-- shared rows for in its epoch: a retried batch is a duplicate, a gap is
-- out of order.
CREATE TABLE shared_sequences (
    transactional_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    partition_no INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    PRIMARY KEY (transactional_id, stream_id, partition_no)
);
