//! PostgreSQL's logical replication messages (the `pgoutput` plugin,
//! protocol version 1), decoded from the bytes one message each — what
//! `pg_logical_slot_peek_binary_changes` returns per row. Values come as
//! text (the plugin's default), exactly as the type's output function
//! prints them. Every length is checked against the bytes left: a
//! malformed message is an error, never a panic or an allocation sized by
//! the message.

use super::{Result, SourceError};

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction starts: its commit's LSN and its id.
    Begin {
        final_lsn: u64,
        xid: u32,
    },
    /// It ends: where its commit record ends (the position to confirm).
    Commit {
        end_lsn: u64,
    },
    /// The columns of a table, sent before its first change in a session
    /// and again after they change.
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old`: the replica identity's values (the key, or the whole row
    /// with `REPLICA IDENTITY FULL`) when it changed or is full.
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, type and logical-message announcements: nothing to apply.
    Other,
}

/// A table as the replication stream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (the key).
    pub key: bool,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: not sent.
    Unchanged,
    Text(String),
}

pub type Tuple = Vec<Value>;

/// Reads big-endian fields off the front of a message.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed("a message ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String> {
        let end = self
            .bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| malformed("a string has no end"))?;
        let s = std::str::from_utf8(&self.bytes[..end])
            .map_err(|_| malformed("a name is not UTF-8"))?
            .to_string();
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple> {
        let n = self.u16()? as usize;
        // Each value takes at least one byte: a count past the bytes left
        // is malformed, not an allocation.
        if n > self.bytes.len() {
            return Err(malformed("a row claims more values than it holds"));
        }
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let text = std::str::from_utf8(self.take(len)?)
                        .map_err(|_| malformed("a value is not UTF-8"))?;
                    Value::Text(text.to_string())
                }
                other => {
                    return Err(malformed(&format!(
                        "a value of kind {:?} (binary values are not asked for)",
                        other as char
                    )));
                }
            });
        }
        Ok(values)
    }
}

fn malformed(why: &str) -> SourceError {
    SourceError::Protocol(format!("malformed pgoutput message: {why}"))
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message> {
    let mut r = Reader { bytes };
    let message = match r.u8()? {
        b'B' => {
            let final_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            let xid = r.u32()?;
            Message::Begin { final_lsn, xid }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            Message::Commit { end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _identity = r.u8()?;
            let n = r.u16()? as usize;
            if n > r.bytes.len() {
                return Err(malformed("a relation claims more columns than it holds"));
            }
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let type_modifier = r.u32()? as i32;
                columns.push(RelationColumn {
                    name,
                    type_oid,
                    type_modifier,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            expect(kind, b'N')?;
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(malformed("a delete without its old row"));
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let _options = r.u8()?;
            if n > r.bytes.len() / 4 {
                return Err(malformed("a truncate claims more tables than it holds"));
            }
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        b'O' | b'Y' | b'M' => Message::Other,
        other => {
            return Err(malformed(&format!(
                "unknown message type {:?}",
                other as char
            )));
        }
    };
    Ok(message)
}

fn expect(got: u8, want: u8) -> Result<()> {
    if got != want {
        return Err(malformed(&format!(
            "expected {:?}, found {:?}",
            want as char, got as char
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(t) => {
                    b.push(b't');
                    b.extend((t.len() as u32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn decodes_a_transaction() {
        let mut begin = vec![b'B'];
        begin.extend(0x0152_99F0_u64.to_be_bytes());
        begin.extend(7u64.to_be_bytes());
        begin.extend(726u32.to_be_bytes());
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x0152_99F0,
                xid: 726
            }
        );

        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0orders\0d");
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(23u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"item\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        let Message::Relation(r) = decode(&rel).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("public", "orders")
        );
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 25);

        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("1"), None]));
        assert_eq!(
            decode(&ins).unwrap(),
            Message::Insert {
                relation: 16384,
                new: vec![Value::Text("1".into()), Value::Null]
            }
        );

        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'K');
        upd.extend(tuple(&[Some("1"), None]));
        upd.push(b'N');
        upd.extend(tuple(&[Some("2"), Some("x")]));
        let Message::Update { old, new, .. } = decode(&upd).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(old.unwrap()[0], Value::Text("1".into()));
        assert_eq!(new[1], Value::Text("x".into()));

        let mut commit = vec![b'C', 0];
        commit.extend(1u64.to_be_bytes());
        commit.extend(0x0152_9BB0_u64.to_be_bytes());
        commit.extend(9u64.to_be_bytes());
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit {
                end_lsn: 0x0152_9BB0
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        // Truncated, an absurd value count, an absurd value length, an
        // unknown type: errors, no panic, no huge allocation.
        assert!(decode(b"").is_err());
        assert!(decode(b"B\0\0").is_err());
        let mut many = vec![b'I'];
        many.extend(1u32.to_be_bytes());
        many.push(b'N');
        many.extend(u16::MAX.to_be_bytes());
        assert!(decode(&many).is_err());
        let mut long = vec![b'I'];
        long.extend(1u32.to_be_bytes());
        long.push(b'N');
        long.extend(1u16.to_be_bytes());
        long.push(b't');
        long.extend(u32::MAX.to_be_bytes());
        assert!(decode(&long).is_err());
        let mut trunc = vec![b'T'];
        trunc.extend(u32::MAX.to_be_bytes());
        trunc.push(0);
        assert!(decode(&trunc).is_err());
        assert!(decode(b"Z").is_err());
    }
}
