//! The status a connector shows while it runs (`SHOW SINKS`, `SHOW
//! SOURCES`, the system tables).

/// Where a connector's run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Finding where it left off.
    Starting,
    /// Copying what exists before following changes (a source's initial
    /// snapshot).
    Snapshot,
    Running,
    /// Finished: everything it was to copy is copied (a file source
    /// that does not watch for new files).
    Done,
    /// The external system or the log failed; trying again (the cause).
    Retrying(String),
    /// Stopped for good (the cause): its stream is gone, or what it
    /// reads cannot be read again.
    Failed(String),
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Snapshot => "snapshot",
            Status::Running => "running",
            Status::Done => "done",
            Status::Retrying(_) => "retrying",
            Status::Failed(_) => "failed",
        }
    }

    /// The cause of a retry or failure.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Status::Retrying(c) | Status::Failed(c) => Some(c),
            _ => None,
        }
    }
}
