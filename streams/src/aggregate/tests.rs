use super::*;
use arrow::datatypes::{Field, Schema};
use arrow::util::pretty::pretty_format_batches;

fn state(dir: &std::path::Path, groups: usize) -> AggregateState {
    let mut fields = Vec::new();
    if groups == 1 {
        fields.push(Field::new("k", DataType::Utf8, true));
    }
    fields.extend([
        Field::new("n", DataType::Int64, true),
        Field::new("s", DataType::Int64, true),
        Field::new("lo", DataType::Float64, true),
        Field::new("hi", DataType::Float64, true),
        Field::new("mean", DataType::Float64, true),
    ]);
    AggregateState::new(
        Arc::new(StateStore::open(dir, "t").unwrap()),
        Arc::new(Schema::new(fields)),
        groups,
        vec![
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
            DataType::Float64,
            DataType::Float64,
            DataType::Int64,
        ],
        vec![
            Merge::Sum,
            Merge::Sum,
            Merge::Min,
            Merge::Max,
            Merge::Sum,
            Merge::Sum,
        ],
        vec![
            Final::Same {
                component: 0,
                is_count: true,
            },
            Final::Same {
                component: 1,
                is_count: false,
            },
            Final::Same {
                component: 2,
                is_count: false,
            },
            Final::Same {
                component: 3,
                is_count: false,
            },
            Final::Avg { sum: 4, count: 5 },
        ],
        None,
    )
    .unwrap()
}

fn step(keys: Option<Vec<&str>>, cols: [Vec<Option<f64>>; 6]) -> RecordBatch {
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut fields = Vec::new();
    if let Some(k) = keys {
        arrays.push(Arc::new(arrow::array::StringArray::from(k)));
        fields.push(Field::new("k", DataType::Utf8, true));
    }
    for (i, c) in cols.into_iter().enumerate() {
        let is_int = matches!(i, 0 | 1 | 5);
        arrays.push(if is_int {
            Arc::new(Int64Array::from_iter(
                c.into_iter().map(|v| v.map(|v| v as i64)),
            ))
        } else {
            Arc::new(Float64Array::from(c))
        });
        fields.push(Field::new(
            format!("c{i}"),
            if is_int {
                DataType::Int64
            } else {
                DataType::Float64
            },
            true,
        ));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

#[test]
fn merges_steps_like_one_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), 1);
    s.merge(
        &[step(
            Some(vec!["a", "b"]),
            [
                vec![Some(2.0), Some(1.0)],
                vec![Some(10.0), None],
                vec![Some(1.5), None],
                vec![Some(4.0), None],
                vec![Some(5.5), None],
                vec![Some(2.0), Some(0.0)],
            ],
        )],
        &[],
        None,
        false,
    )
    .unwrap();
    s.merge(
        &[step(
            Some(vec!["b", "a"]),
            [
                vec![Some(3.0), Some(1.0)],
                vec![Some(7.0), Some(-1.0)],
                vec![Some(2.0), Some(0.5)],
                vec![Some(9.0), Some(3.0)],
                vec![Some(9.0), Some(0.5)],
                vec![Some(3.0), Some(1.0)],
            ],
        )],
        &[],
        None,
        false,
    )
    .unwrap();
    let text = pretty_format_batches(&[s.contents().unwrap()])
        .unwrap()
        .to_string();
    assert_eq!(
        text,
        "+---+---+---+-----+-----+------+\n\
         | k | n | s | lo  | hi  | mean |\n\
         +---+---+---+-----+-----+------+\n\
         | a | 3 | 9 | 0.5 | 4.0 | 2.0  |\n\
         | b | 4 | 7 | 2.0 | 9.0 | 3.0  |\n\
         +---+---+---+-----+-----+------+"
    );
}

#[test]
fn a_global_aggregate_has_one_row_even_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), 0);
    let empty = s.contents().unwrap();
    assert_eq!(empty.num_rows(), 1);
    assert_eq!(empty.column(0).as_primitive::<Int64Type>().value(0), 0);
    assert!(empty.column(1).is_null(0));
    s.merge(
        &[step(
            None,
            [
                vec![Some(2.0)],
                vec![Some(3.0)],
                vec![Some(1.0)],
                vec![Some(2.0)],
                vec![Some(3.0)],
                vec![Some(2.0)],
            ],
        )],
        &[],
        None,
        false,
    )
    .unwrap();
    let one = s.contents().unwrap();
    assert_eq!(one.num_rows(), 1);
    assert_eq!(one.column(0).as_primitive::<Int64Type>().value(0), 2);
}

fn windowed(dir: &std::path::Path) -> AggregateState {
    let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None);
    AggregateState::new(
        Arc::new(StateStore::open(dir, "w").unwrap()),
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("window_end", ts.clone(), true),
            Field::new("n", DataType::Int64, true),
        ])),
        2,
        vec![DataType::Int64],
        vec![Merge::Sum],
        vec![Final::Same {
            component: 0,
            is_count: true,
        }],
        Some(Windowing {
            end_column: 1,
            rows_component: 0,
        }),
    )
    .unwrap()
}

fn window_step(rows: &[(&str, i64, i64)]) -> RecordBatch {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "e",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
    ])
    .unwrap()
}

#[test]
fn windows_close_once_and_late_rows_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = windowed(dir.path());
    let m = s
        .merge(
            &[window_step(&[("a", 10, 2), ("b", 20, 1), ("a", 20, 5)])],
            &[],
            None,
            true,
        )
        .unwrap();
    let ch = m.changes.unwrap();
    assert_eq!(ch.before.num_rows(), 0);
    assert_eq!(ch.after.num_rows(), 3);
    let closed = s.close_windows(10).unwrap();
    assert_eq!(closed.num_rows(), 1);
    assert_eq!(closed.column(2).as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(s.close_windows(10).unwrap().num_rows(), 0, "closed once");
    // A row for the closed window is late; one for an open window merges.
    let m = s
        .merge(
            &[window_step(&[("a", 10, 4), ("a", 20, 1)])],
            &[],
            Some(10),
            true,
        )
        .unwrap();
    assert_eq!(m.late_rows, 4);
    let ch = m.changes.unwrap();
    assert_eq!(ch.before.num_rows(), 1);
    assert_eq!(ch.before.column(2).as_primitive::<Int64Type>().value(0), 5);
    assert_eq!(ch.after.column(2).as_primitive::<Int64Type>().value(0), 6);
    let closed = s.close_windows(20).unwrap();
    assert_eq!(closed.num_rows(), 2);
    assert_eq!(
        s.contents().unwrap().num_rows(),
        3,
        "closed windows stay readable"
    );
}
