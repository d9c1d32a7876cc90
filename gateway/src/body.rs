//! Bodies: the response body type the gateway sends, and bounded reading of incoming bodies.
//!
//! A response body is either complete ([`GatewayBody::full`]) or fed frame by frame from the
//! task that processes a provider's SSE stream ([`GatewayBody::channel`], a bounded channel, so
//! a slow client slows the provider read instead of growing a buffer). Dropping a channel body
//! — which hyper does when the client goes away — is how the stream task learns of a
//! cancellation.
//!
//! Reading is always bounded: [`read_limited`] refuses more than the limit, checking
//! `content-length` first so an oversized upload is refused before it is read.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// A failure while streaming a response body; hyper then aborts the response.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// The body of every response the gateway sends.
#[derive(Debug)]
pub struct GatewayBody {
    inner: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, StreamError>>),
}

impl GatewayBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self {
            inner: BodyKind::Full((!b.is_empty()).then_some(b)),
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: BodyKind::Full(None),
        }
    }

    pub(crate) fn channel(rx: mpsc::Receiver<Result<Bytes, StreamError>>) -> Self {
        Self {
            inner: BodyKind::Channel(rx),
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match &mut self.inner {
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.inner, BodyKind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyKind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            BodyKind::Full(None) => SizeHint::with_exact(0),
            BodyKind::Channel(_) => SizeHint::default(),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the body failed: {0}")]
    Io(String),
}

/// Read a whole body, refusing more than `limit` bytes.
pub async fn read_limited<B>(
    mut body: B,
    content_length: Option<u64>,
    limit: usize,
) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    // Most bodies arrive as one frame: keep that frame without copying.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Io(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(ReadError::TooLarge { limit });
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(
                    content_length.map_or(f.len() + data.len(), |n| n as usize),
                );
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                buf = Some(b);
                first = None;
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_declared_oversized_body_is_refused_before_reading() {
        let r = read_limited(Full::new(Bytes::from_static(b"abc")), Some(10), 5).await;
        assert!(matches!(r, Err(ReadError::TooLarge { limit: 5 })));
    }

    #[tokio::test]
    async fn chunks_are_joined_and_counted() {
        let body = Frames(vec![Bytes::from_static(b"cd"), Bytes::from_static(b"ab")]);
        assert_eq!(&read_limited(body, None, 4).await.unwrap()[..], b"abcd");
        let body = Frames(vec![Bytes::from_static(b"cde"), Bytes::from_static(b"ab")]);
        assert!(read_limited(body, None, 4).await.is_err());
    }

    /// Yields its frames from the back.
    struct Frames(Vec<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
        }
    }
}
