//! Consumer groups: membership transactions and committed offsets, for
//! either store.

use async_trait::async_trait;

use super::super::GroupStore;
use super::super::rows::{self, MetaRow};
use super::super::sql::{Backend, Sql, Statement};
use crate::clock::Micros;
use crate::error::LogError;
use crate::error::Result;
use crate::groups::check_deadline;
use crate::groups::classic::{self, ClassicGroup, ClassicOp, ClassicReply};
use crate::groups::rules::{self, CommitCheck, GroupOp, StoredGroup};
use crate::stream::StreamId;

/// A group's stored state, its row locked for the transaction.
async fn load_group<B: Backend>(c: &mut B::Conn, group: &str) -> Result<Option<StoredGroup>> {
    let Some(row) = c
        .fetch_optional(
            Statement::new(format!(
                "SELECT stream_id, partitions, strategy, generation FROM consumer_groups \
                 WHERE group_id = $1{}",
                B::FOR_UPDATE
            ))
            .text(group),
        )
        .await?
    else {
        return Ok(None);
    };
    let members = c
        .fetch_all(
            Statement::new(
                "SELECT member_id, heartbeat_at_us, timeout_us FROM group_members \
                 WHERE group_id = $1",
            )
            .text(group),
        )
        .await?;
    Ok(Some(rows::stored_group(&row, &members)?))
}

/// The lock space of consumer groups (see `Backend::lock_key`).
const GROUP_LOCKS: i64 = 1;

fn decode_classic(group: &str, state: &str) -> Result<ClassicGroup> {
    serde_json::from_str(state)
        .map_err(|e| LogError::Internal(format!("stored state of group \"{group}\": {e}")))
}

#[async_trait]
impl<B: Backend> GroupStore for B {
    async fn commit_group_offsets(
        &self,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
        check: Option<&CommitCheck>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<()> {
        let mut w = self.writer().await?;
        if let Some(check) = check {
            let stored = load_group::<B>(&mut w, group).await?;
            rules::check_commit(group, stored.as_ref(), check)?;
        }
        B::write_group_offsets(&mut w, group, stream_id, offsets, committed_at).await?;
        // The offsets' rows are locked: a later commit waits for this one.
        check_deadline(deadline)?;
        B::commit(w).await
    }

    async fn update_group(
        &self,
        group: &str,
        op: &GroupOp,
        now: Micros,
    ) -> Result<Option<StoredGroup>> {
        let mut w = self.writer().await?;
        // Serializes operations on the group, whether or not it exists yet.
        B::lock_key(&mut w, GROUP_LOCKS, group).await?;
        let stored = load_group::<B>(&mut w, group).await?;
        let Some(g) = rules::apply(group, stored, op, now)? else {
            return Ok(None);
        };
        w.execute(
            Statement::new(
                "INSERT INTO consumer_groups \
                 (group_id, stream_id, partitions, strategy, generation) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id) DO UPDATE SET \
                 stream_id = excluded.stream_id, partitions = excluded.partitions, \
                 generation = excluded.generation",
            )
            .text(group)
            .int(g.stream_id)
            .int(g.partitions as i64)
            .text(rows::strategy_name(g.strategy))
            .uint(g.generation),
        )
        .await?;
        w.execute(Statement::new("DELETE FROM group_members WHERE group_id = $1").text(group))
            .await?;
        B::write_members(&mut w, group, &g).await?;
        B::commit(w).await?;
        Ok(Some(g))
    }

    async fn group_names(&self) -> Result<Vec<String>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(
                "SELECT group_id FROM consumer_groups ORDER BY group_id",
            ))
            .await?;
        rows.iter().map(|r| r.text("group_id")).collect()
    }

    async fn group_offsets(&self, group: &str, stream_id: StreamId) -> Result<Vec<(u32, u64)>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(
                    "SELECT partition_no, next_offset FROM group_offsets \
                     WHERE group_id = $1 AND stream_id = $2 ORDER BY partition_no",
                )
                .text(group)
                .int(stream_id),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.int("partition_no")? as u32, r.int("next_offset")? as u64)))
            .collect()
    }

    async fn update_classic_group(
        &self,
        group: &str,
        op: &ClassicOp,
        now: Micros,
        offsets: &[(StreamId, Vec<(u32, u64)>)],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<ClassicReply> {
        let mut w = self.writer().await?;
        // Serializes operations on the group, whether or not it exists yet.
        B::lock_key(&mut w, GROUP_LOCKS, group).await?;
        let stored = w
            .fetch_optional(
                Statement::new(format!(
                    "SELECT state FROM classic_groups WHERE group_id = $1{}",
                    B::FOR_UPDATE
                ))
                .text(group),
            )
            .await?
            .map(|row| row.text("state"))
            .transpose()?;
        let before = stored
            .as_deref()
            .map(|s| decode_classic(group, s))
            .transpose()?;
        let (after, reply) = classic::apply(before.clone(), op, now);
        if after != before {
            match &after {
                Some(g) => {
                    let state = serde_json::to_string(g)
                        .map_err(|e| LogError::Internal(format!("group state: {e}")))?;
                    w.execute(
                        Statement::new(
                            "INSERT INTO classic_groups (group_id, state) VALUES ($1, $2) \
                             ON CONFLICT (group_id) DO UPDATE SET state = excluded.state",
                        )
                        .text(group)
                        .text(state),
                    )
                    .await?;
                }
                None => {
                    w.execute(
                        Statement::new("DELETE FROM classic_groups WHERE group_id = $1")
                            .text(group),
                    )
                    .await?;
                }
            }
        }
        if matches!(op, ClassicOp::Commit { .. }) && reply == ClassicReply::Ok {
            for (stream_id, parts) in offsets {
                B::write_group_offsets(&mut w, group, *stream_id, parts, now).await?;
            }
            // The group is locked: a later commit waits for this one.
            check_deadline(deadline)?;
        }
        B::commit(w).await?;
        Ok(reply)
    }

    async fn classic_groups(&self) -> Result<Vec<(String, ClassicGroup)>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(
                "SELECT group_id, state FROM classic_groups ORDER BY group_id",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let group = r.text("group_id")?;
                let state = decode_classic(&group, &r.text("state")?)?;
                Ok((group, state))
            })
            .collect()
    }

    async fn groups(&self) -> Result<Vec<(String, StreamId)>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(
                "SELECT DISTINCT group_id, stream_id FROM group_offsets \
                 ORDER BY group_id, stream_id",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("group_id")?, r.int("stream_id")?)))
            .collect()
    }
}
