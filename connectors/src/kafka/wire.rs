//! One connection to a Kafka broker, speaking the requests the
//! transactional producer needs (kafka-protocol encodes and decodes them):
//! a request is framed with its header, answered in order, and checked
//! against its correlation id. Every call is bounded by [`super::DEADLINE`]
//! and a response by [`MAX_RESPONSE`] bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

/// The largest response read (a fetch asks for less).
pub const MAX_RESPONSE: usize = 64 << 20;

/// A connection to one broker.
pub struct Conn {
    stream: TcpStream,
    address: String,
    correlation: i32,
}

impl Conn {
    /// Connects to `address` (`host:port`).
    pub async fn open(address: &str) -> Result<Conn, String> {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(address))
            .await
            .map_err(|_| format!("Kafka at {address}: no connection within {DEADLINE:?}"))?
            .map_err(|e| format!("Kafka at {address}: {e}"))?;
        stream.set_nodelay(true).ok();
        Ok(Conn {
            stream,
            address: address.to_string(),
            correlation: 0,
        })
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` as `version` and reads its response.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        let address = self.address.clone();
        tokio::time::timeout(DEADLINE, self.exchange(request, version))
            .await
            .map_err(|_| format!("Kafka at {address}: no answer within {DEADLINE:?}"))?
            .map_err(|e| format!("Kafka at {address}: {e}"))
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("streamhouse")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| format!("encoding a request header: {e}"))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| format!("encoding a request: {e}"))?;
        let size = i32::try_from(frame.len() - 4).map_err(|_| "a request too large".to_string())?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| e.to_string())?;
        let size = self.stream.read_i32().await.map_err(|e| e.to_string())?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE)
            .ok_or_else(|| format!("a response of {size} bytes"))?;
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| format!("decoding a response header: {e}"))?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "a response to request {} where {} was expected",
                header.correlation_id, self.correlation
            ));
        }
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| format!("decoding a response: {e}"))?;
        if body.has_remaining() {
            tracing::debug!(left = body.remaining(), "bytes after a Kafka response");
        }
        Ok(response)
    }
}
