//! [`Views`]: the materialized views this agent knows — those it runs,
//! those other agents run, and those that could not be brought back. The
//! statements that create, drop, load and hand over views change it; the
//! `streamhouse.*` tables and SHOW read it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use streamhouse_log::ViewRecord;

use crate::matview::MatView;

/// A view another agent maintains.
#[derive(Debug, Clone)]
pub(crate) struct RemoteView {
    pub record: ViewRecord,
}

/// The views of this agent, by name.
#[derive(Default)]
pub struct Views {
    /// Views running here.
    pub(crate) running: RwLock<HashMap<String, Arc<MatView>>>,
    /// Views other agents maintain.
    pub(crate) remote: RwLock<HashMap<String, RemoteView>>,
    /// Stored views that could not be brought back: (definition, error).
    pub(crate) failed: RwLock<HashMap<String, (String, String)>>,
}

impl Views {
    /// The views running here, sorted by name.
    pub fn by_name(&self) -> Vec<Arc<MatView>> {
        let mut list: Vec<Arc<MatView>> = self
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The views other agents run: (name, status, definition).
    pub fn remote_rows(&self) -> Vec<(String, String, String)> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| {
                let status = match &r.record.lease.owner {
                    Some(agent) => format!("running on agent {agent}"),
                    None => "waiting for an agent".to_string(),
                };
                (r.record.name.clone(), status, r.record.definition.clone())
            })
            .collect()
    }

    /// How many views run here.
    pub fn running_count(&self) -> usize {
        self.running.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The columns of SHOW MATERIALIZED VIEWS.
pub fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("lag_rows", DataType::Int64, false),
        Field::new("checkpoint", DataType::Int64, false),
        Field::new("restored_from", DataType::Utf8, false),
        Field::new("inputs", DataType::Utf8, false),
        Field::new("emit", DataType::Utf8, false),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}
