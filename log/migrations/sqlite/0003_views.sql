-- Materialized views: name, SQL definition, and the last checkpoint of the
-- dataflow that maintains each. The SQL layer plans views; the log keeps
-- them. `dataflow` names one incarnation of a view (its state objects live
-- under state/<dataflow>/), so a view dropped and created again never
-- reads the old one's state.

CREATE TABLE views (
    name              TEXT    PRIMARY KEY,
    dataflow          TEXT    NOT NULL UNIQUE,
    definition        TEXT    NOT NULL,
    created_at_us     BIGINT  NOT NULL,
    checkpoint_no     BIGINT,
    input_offsets     TEXT,              -- JSON: {"<stream id>": [next offset per partition]}
    state_key         TEXT,              -- object key of the state snapshot's manifest
    checkpointed_at_us BIGINT
);
