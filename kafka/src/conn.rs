//! One client connection (plaintext or TLS): length-prefixed frames in,
//! the same out, every request answered in the order it came.
//!
//! Requests are handled one after another, as Apache Kafka does, with one
//! exception that keeps producers fast: a produce request's records are
//! validated and buffered in turn, and its durability is awaited while
//! later requests go on; the writer sends answers strictly in request
//! order. Answers ready now are encoded at once and queued under a byte
//! budget per connection (a client that stops reading its answers stops
//! being read); produce answers wait for durability in a longer queue, so
//! that many small pipelined requests are not held behind the flush.
//!
//! A frame is read as it arrives (memory follows the bytes received, not
//! the size a client claims), up to the largest request the door accepts. A frame that is too large or cannot be decoded, or a request
//! for an API this door does not serve, closes the connection, as Apache
//! Kafka does; an ApiVersions request of a version too new is answered
//! with version 0 and UNSUPPORTED_VERSION (KIP-511).
//!
//! After a version-0 SaslHandshake, the frames until the login ends are
//! bare SASL tokens, answered with bare tokens (a failed login closes the
//! connection).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Encodable, decode_request_header_from_buffer};
use streamhouse_sql::session::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::ctx::{Answer, Ctx, Door, Login};
use crate::versions;

/// Answers queued behind the one being written, at most: produce answers
/// waiting for durability are small, and a client that pipelines many
/// small produce requests (linger 0) must not wait on this bound while
/// the store's flush is slow.
const MAX_QUEUED: usize = 4096;

/// Bytes of encoded answers queued on one connection, at most: reading
/// requests stops while a client that does not read its answers (fetches,
/// above all) holds this much.
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// What the reader hands the writer, in request order.
enum Out {
    /// Encoded, holding its share of the connection's byte budget until
    /// written.
    Ready(Bytes, OwnedSemaphorePermit),
    /// An answer once its future completes (produce durability).
    Later {
        correlation_id: i32,
        api_key: ApiKey,
        version: i16,
        answer: BoxFuture<'static, ResponseKind>,
    },
}

struct Queued {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    answer: Answer,
}

/// Serves one connection until the client closes it or sends what cannot
/// be served.
pub async fn serve<R, W>(door: Arc<Door>, rd: R, mut wr: W, peer: SocketAddr) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let (tx, mut rx) = mpsc::channel::<Out>(MAX_QUEUED);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(q) = rx.recv().await {
            match q {
                Out::Ready(bytes, permit) => {
                    wr.write_all(&bytes).await?;
                    drop(permit);
                }
                Out::Later {
                    correlation_id,
                    api_key,
                    version,
                    answer,
                } => {
                    let response = answer.await;
                    out.clear();
                    encode(&mut out, correlation_id, api_key, version, &response)?;
                    wr.write_all(&out).await?;
                }
            }
        }
        Ok::<_, io::Error>(())
    });
    let mut ctx = Ctx {
        door: door.clone(),
        session: Arc::new(Session::for_door(crate::ctx::DOOR)),
        login: Login::default(),
        peer,
        client_id: String::new(),
        unframed_sasl: false,
    };
    let budget = Arc::new(Semaphore::new(MAX_QUEUED_BYTES));
    let result = read_loop(&mut rd, &mut ctx, &tx, &budget).await;
    drop(tx);
    match writer.await {
        Ok(Err(e)) if result.is_ok() => return Err(e),
        _ => {}
    }
    result
}

/// Hands one answer to the writer: encoded now (waiting for room in the
/// byte budget), or as a future; `false` when the writer is gone.
async fn hand_over(tx: &mpsc::Sender<Out>, budget: &Arc<Semaphore>, q: Queued) -> io::Result<bool> {
    let encoded = match q.answer {
        Answer::None | Answer::Close => return Ok(true),
        Answer::Later(answer) => {
            let later = Out::Later {
                correlation_id: q.correlation_id,
                api_key: q.api_key,
                version: q.version,
                answer,
            };
            return Ok(tx.send(later).await.is_ok());
        }
        Answer::Unframed(token) => {
            let mut out = BytesMut::with_capacity(4 + token.len());
            out.put_i32(i32::try_from(token.len()).map_err(io::Error::other)?);
            out.put_slice(&token);
            out
        }
        Answer::Now(response) => {
            let mut out = BytesMut::new();
            encode(&mut out, q.correlation_id, q.api_key, q.version, &response)?;
            out
        }
    };
    let cost = u32::try_from(encoded.len().clamp(1, MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
    let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
        return Ok(false);
    };
    Ok(tx.send(Out::Ready(encoded.freeze(), permit)).await.is_ok())
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &mut Ctx,
    tx: &mpsc::Sender<Out>,
    budget: &Arc<Semaphore>,
) -> io::Result<()> {
    let max = ctx.door.config.max_request_bytes;
    loop {
        // A request has at least its key, version and correlation id; a
        // bare SASL token may be shorter.
        let min = if crate::sasl::expects_unframed(ctx) {
            1
        } else {
            8
        };
        let size = match rd.read_i32().await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("request of {size} bytes (accepted: {min} to {max})"),
                )
            })?;
        let frame = read_frame(rd, size).await?;
        if crate::sasl::expects_unframed(ctx) {
            let Some(token) = crate::sasl::unframed(ctx, frame).await else {
                return Err(invalid("SASL authentication failed"));
            };
            let queued = Queued {
                correlation_id: 0,
                api_key: ApiKey::SaslAuthenticate,
                version: 0,
                answer: Answer::Unframed(token),
            };
            if !hand_over(tx, budget, queued).await? {
                return Ok(());
            }
            continue;
        }
        let Some(queued) = request(ctx, frame).await? else {
            continue;
        };
        if !hand_over(tx, budget, queued).await? {
            // The writer failed: the connection is gone.
            return Ok(());
        }
    }
}

/// Reads `size` bytes as they arrive.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, size: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size.min(64 << 10));
    while buf.len() < size {
        let want = (size - buf.len()).min(1 << 20);
        buf.reserve(want);
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Decodes and handles one request.
async fn request(ctx: &mut Ctx, mut frame: Bytes) -> io::Result<Option<Queued>> {
    if matches!(ctx.login, Login::Failed) {
        return Err(invalid("a failed login ends the connection"));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(raw_key).map_err(|_| invalid(format!("unknown API key {raw_key}")))?;
    if !versions::served(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            let response = ApiVersionsResponse::default()
                .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
                .with_api_keys(versions::advertised());
            return Ok(Some(Queued {
                correlation_id,
                api_key,
                version: 0,
                answer: Answer::now(response),
            }));
        }
        return Err(invalid(format!(
            "{api_key:?} version {version} is not served"
        )));
    }
    let header: RequestHeader = decode_request_header_from_buffer(&mut frame).map_err(invalid)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(invalid)?;
    // Bytes past the body are ignored, as Apache Kafka ignores them (some
    // clients send a few).
    if let Some(id) = &header.client_id
        && ctx.client_id != id.as_str()
    {
        ctx.client_id = id.to_string();
    }
    let sasl = matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    );
    if !sasl && !ctx.login.admits_requests(ctx.door.config.require_login) {
        return Err(invalid(format!(
            "{api_key:?} before logging in (SASL PLAIN or SCRAM-SHA-256 is required)"
        )));
    }
    let answer = crate::dispatch::dispatch(ctx, &header, body).await;
    if matches!(answer, Answer::Close) {
        return Err(invalid(format!("{api_key:?} cannot be answered")));
    }
    Ok(Some(Queued {
        correlation_id,
        api_key,
        version,
        answer,
    }))
}

/// A response frame: size, header, body.
fn encode(
    out: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> io::Result<()> {
    let frame = |out: &mut BytesMut| -> anyhow::Result<()> {
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(out, api_key.response_header_version(version))?;
        response.encode(out, version)?;
        let len = i32::try_from(out.len() - 4)?;
        out[0..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    };
    frame(out).map_err(|e| {
        tracing::error!(api = ?api_key, version, error = %e, "cannot encode a kafka response");
        io::Error::other(e.to_string())
    })
}
