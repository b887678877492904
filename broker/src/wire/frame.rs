//! Frame I/O: every Kafka request and response is an i32 big-endian length
//! followed by that many bytes.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a frame could not be read. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length is above the limit; the body was not read.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The declared length is negative.
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read one frame's payload (without the length prefix). `Ok(None)` means the
/// peer closed the connection cleanly between frames.
///
/// The buffer grows as bytes arrive rather than being allocated from the
/// declared length, so a peer that announces a large frame and then stalls
/// costs nothing.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated { got, want: 4 }) };
        }
        got += n;
    }
    let declared = i32::from_be_bytes(len);
    if declared < 0 {
        return Err(FrameError::NegativeLength(declared));
    }
    let size = declared as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    const INITIAL: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(size.min(INITIAL));
    let n = r.take(size as u64).read_to_end(&mut buf).await?;
    if n < size {
        return Err(FrameError::Truncated { got: n, want: size });
    }
    Ok(Some(Bytes::from(buf)))
}

/// How much a [`FrameReader`] asks the socket for at a time.
pub const READ_CHUNK: usize = 64 * 1024;

/// A connection's inbound side on the broker: frames cut from a buffer that
/// fills as bytes arrive. Unlike [`read_frame`], it can keep reading while a
/// request is parked, so the broker notices a client that hangs up in the
/// middle of a long poll. It never holds more than one largest-allowed frame
/// plus one read chunk.
///
/// With a budget (`queued.max.request.bytes`, shared by every connection),
/// each read first takes permits for the bytes it may read; permits are given
/// back when the frame they hold has been answered (the next call to
/// [`FrameReader::next`]). A connection that finds the budget spent waits,
/// holding nothing more, until other requests finish.
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
    budget: Option<Arc<Semaphore>>,
    /// Permits for the bytes in `buf`.
    held: Option<OwnedSemaphorePermit>,
    /// Permits for the frame last returned, still being answered.
    answering: Option<OwnedSemaphorePermit>,
    /// The most one read takes from the socket (tests and buggify shrink it).
    read_limit: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> FrameReader {
        FrameReader { buf: BytesMut::new(), max, budget: None, held: None, answering: None, read_limit: READ_CHUNK }
    }

    /// A reader whose buffered bytes count against `budget`.
    pub fn with_budget(max: usize, budget: Arc<Semaphore>) -> FrameReader {
        FrameReader { budget: Some(budget), ..FrameReader::new(max) }
    }

    /// Read at most `limit` bytes at a time (at least 1): frames then arrive
    /// in many pieces, as a slow network delivers them.
    pub fn set_read_limit(&mut self, limit: usize) {
        self.read_limit = limit.clamp(1, READ_CHUNK);
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame's payload; `Ok(None)` when the peer closed cleanly
    /// between frames.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Bytes>, FrameError> {
        // The previous frame has been answered: its bytes are free.
        self.answering = None;
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Some(frame));
            }
            if !self.fill(r).await? {
                return match self.buf.len() {
                    0 => Ok(None),
                    got if got < 4 => Err(FrameError::Truncated { got, want: 4 }),
                    got => Err(FrameError::Truncated { got: got - 4, want: self.declared()? }),
                };
            }
        }
    }

    /// Resolves when the peer closes the connection (or it fails), reading
    /// and keeping whatever the peer pipelines meanwhile. Never resolves once
    /// a whole frame is buffered: then the peer must wait for our answer.
    /// Cancel-safe: bytes read are kept.
    pub async fn closed<R: AsyncRead + Unpin>(&mut self, r: &mut R) {
        loop {
            let full = self.buf.len() >= 4 && self.declared().map_or(true, |n| self.buf.len() >= 4 + n);
            if full || self.buf.len() >= self.max + 4 {
                return std::future::pending().await;
            }
            match self.fill(r).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    fn declared(&self) -> Result<usize, FrameError> {
        let declared = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if declared < 0 {
            return Err(FrameError::NegativeLength(declared));
        }
        let size = declared as usize;
        if size > self.max {
            return Err(FrameError::TooLarge { size, max: self.max });
        }
        Ok(size)
    }

    fn take(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let size = self.declared()?;
        if self.buf.len() < 4 + size {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(4 + size);
        frame.advance(4);
        if let Some(held) = &mut self.held {
            self.answering = held.split(4 + size);
        }
        Ok(Some(frame.freeze()))
    }

    /// Read once; false at end of stream. Reads no further than the end of
    /// the frame being read, so pipelined requests wait in the socket, not
    /// in our memory.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<bool> {
        let want = match self.buf.len() {
            n if n < 4 => 4 - n,
            n => match self.declared() {
                Ok(size) => (4 + size).saturating_sub(n).clamp(1, READ_CHUNK),
                Err(_) => 1,
            },
        }
        .min(self.read_limit);
        let mut permit = match &self.budget {
            Some(budget) => Some(
                budget
                    .clone()
                    .acquire_many_owned(want as u32)
                    .await
                    .map_err(|_| std::io::Error::other("budget closed"))?,
            ),
            None => None,
        };
        self.buf.reserve(want);
        let n = (&mut *r).take(want as u64).read_buf(&mut self.buf).await?;
        if let Some(p) = &mut permit {
            // Keep permits for what was read; give back the rest now.
            let kept = p.split(n);
            match (&mut self.held, kept) {
                (Some(held), Some(kept)) => held.merge(kept),
                (held @ None, kept) => *held = kept,
                (Some(_), None) => {}
            }
        }
        Ok(n > 0)
    }
}

/// Write one already-framed buffer (length prefix included, as the encoders
/// in this module produce) and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    assert!(frame.len() >= 4, "a frame carries its length prefix");
    assert_eq!(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize, frame.len() - 4);
    w.write_all(frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn reads_frames_and_clean_eof() {
        let data: Vec<u8> = [&3i32.to_be_bytes()[..], b"abc", &0i32.to_be_bytes()[..]].concat();
        block_on(async {
            let mut r = &data[..];
            assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap(), Bytes::from_static(b"abc"));
            assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap(), Bytes::new());
            assert!(read_frame(&mut r, 10).await.unwrap().is_none());
        });
    }

    #[test]
    fn frame_reader_cuts_pipelined_frames_and_sees_a_hang_up() {
        let data: Vec<u8> = [&3i32.to_be_bytes()[..], b"abc", &2i32.to_be_bytes()[..], b"de"].concat();
        block_on(async {
            let mut r = &data[..];
            let mut reader = FrameReader::new(10);
            assert_eq!(reader.next(&mut r).await.unwrap().unwrap(), Bytes::from_static(b"abc"));
            // A whole frame is buffered (or arrives): `closed` must not
            // resolve, since the peer is waiting for an answer.
            use futures::FutureExt;
            assert!(reader.closed(&mut r).now_or_never().is_none());
            assert_eq!(reader.next(&mut r).await.unwrap().unwrap(), Bytes::from_static(b"de"));
            reader.closed(&mut r).await;
            assert!(reader.next(&mut r).await.unwrap().is_none());
            let short: Vec<u8> = [&5i32.to_be_bytes()[..], b"ab"].concat();
            let mut reader = FrameReader::new(10);
            assert!(matches!(reader.next(&mut &short[..]).await, Err(FrameError::Truncated { got: 2, want: 5 })));
            let big = 11i32.to_be_bytes();
            assert!(matches!(FrameReader::new(10).next(&mut &big[..]).await, Err(FrameError::TooLarge { .. })));
        });
    }

    #[test]
    fn a_shared_budget_bounds_bytes_held_across_readers() {
        use futures::FutureExt;
        use tokio::io::AsyncWriteExt;
        block_on(async {
            let budget = Arc::new(Semaphore::new(100));
            let (mut a_peer, mut a) = tokio::io::duplex(1024);
            let (mut b_peer, mut b) = tokio::io::duplex(1024);
            let mut ra = FrameReader::with_budget(1000, budget.clone());
            let mut rb = FrameReader::with_budget(1000, budget.clone());
            // A: a 90-byte frame, 80 bytes of it sent, then a stall.
            a_peer.write_all(&90i32.to_be_bytes()).await.unwrap();
            a_peer.write_all(&[1; 80]).await.unwrap();
            assert!(ra.next(&mut a).now_or_never().is_none());
            assert_eq!(budget.available_permits(), 100 - 84);
            // B: a whole 50-byte frame is on the wire, but only 16 bytes of
            // budget are left: B reads its length, then waits for room for
            // the body.
            b_peer.write_all(&50i32.to_be_bytes()).await.unwrap();
            b_peer.write_all(&[2; 50]).await.unwrap();
            assert!(rb.next(&mut b).now_or_never().is_none());
            assert_eq!(rb.buffered(), 4, "B read only what the budget allowed");
            assert_eq!(budget.available_permits(), 12);
            // A's frame completes and is answered: its bytes are freed on A's next read.
            a_peer.write_all(&[1; 10]).await.unwrap();
            assert_eq!(ra.next(&mut a).await.unwrap().unwrap().len(), 90);
            assert!(rb.next(&mut b).now_or_never().is_none(), "A's frame is still being answered");
            assert!(ra.next(&mut a).now_or_never().is_none());
            assert_eq!(rb.next(&mut b).await.unwrap().unwrap(), Bytes::from(vec![2u8; 50]));
            drop(rb.next(&mut b).now_or_never());
            assert_eq!(budget.available_permits(), 100);
        });
    }

    #[test]
    fn rejects_bad_lengths() {
        block_on(async {
            let big = 11i32.to_be_bytes();
            assert!(matches!(read_frame(&mut &big[..], 10).await, Err(FrameError::TooLarge { size: 11, max: 10 })));
            let neg = (-1i32).to_be_bytes();
            assert!(matches!(read_frame(&mut &neg[..], 10).await, Err(FrameError::NegativeLength(-1))));
            let short: Vec<u8> = [&5i32.to_be_bytes()[..], b"ab"].concat();
            assert!(matches!(read_frame(&mut &short[..], 10).await, Err(FrameError::Truncated { got: 2, want: 5 })));
            assert!(matches!(read_frame(&mut &[0u8, 0][..], 10).await, Err(FrameError::Truncated { got: 2, want: 4 })));
        });
    }
}
