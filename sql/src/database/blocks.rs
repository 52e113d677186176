//! Transaction block statements: BEGIN, COMMIT (which appends the
//! block's staged writes in one metadata transaction), ROLLBACK and
//! savepoints.

use tracing::debug;

use super::Database;
use crate::error::Result;
use crate::result::{CommandTag, QueryResult};
use crate::session::Session;
use crate::transaction::{Control, Ending};

impl Database {
    pub(super) async fn control(
        &self,
        session: &Session,
        control: &Control,
    ) -> Result<QueryResult> {
        let block = session.transaction();
        let tag = match control {
            Control::Begin => {
                if !block.begin() {
                    debug!("BEGIN inside a transaction block: the block goes on");
                }
                CommandTag::Begin
            }
            Control::Commit => match block.end() {
                Ending::NoBlock => CommandTag::Commit,
                Ending::RolledBack => CommandTag::Rollback,
                Ending::Commit(writes) => {
                    self.log
                        .append_staged(writes.into_iter().map(|w| w.staged).collect())
                        .await?;
                    CommandTag::Commit
                }
            },
            Control::Rollback => {
                block.rollback();
                CommandTag::Rollback
            }
            Control::Savepoint(name) => {
                block.savepoint(name)?;
                CommandTag::Savepoint
            }
            Control::Release(name) => {
                block.release(name)?;
                CommandTag::Release
            }
            Control::RollbackTo(name) => {
                block.rollback_to(name)?;
                CommandTag::RollbackToSavepoint
            }
        };
        Ok(QueryResult::command(tag))
    }
}
