//! Bounded decompression of record-batch bodies, for every codec Kafka uses:
//! gzip, snappy (Kafka's xerial block framing, or one raw block), lz4 frames
//! and zstd. Everything that looks inside a compressed batch — produce
//! validation, ListOffsets by timestamp over stored data, the consumer's
//! decoder — reads through here.
//!
//! A few hundred compressed bytes can claim or expand to gigabytes, so the
//! output is counted *while* it is produced and decoding stops the moment it
//! passes the limit. Nothing is allocated from a size a header claims: a
//! snappy block's stated length is checked against what is left of the limit
//! before its buffer exists, lz4 and zstd stream through fixed buffers
//! (zstd's window is capped too), and output buffers grow with what was
//! actually decoded.

use std::io::{self, BufRead, Read};

use snap::raw::{decompress_len, Decoder as SnappyDecoder};

/// Default for [`crate::config::LogConfig::max_decompressed_batch_bytes`]
/// and the consumer's bound on a fetched batch: 64 MiB, far above any batch
/// a real producer builds (Kafka producers cap a batch at `batch.size`,
/// 16 KiB by default, and a request at 1 MiB before compression), and small
/// enough that a handful of concurrent bombs cannot exhaust memory.
pub const DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// The xerial snappy stream header Kafka's producers write: magic, version
/// 1, compatible version 1.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Why a batch body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The output passed the limit (or a header claimed it would).
    #[error("batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The compressed bytes are malformed, or the codec id is unknown.
    #[error("{0}")]
    Corrupt(String),
}

/// Marker carried inside an `io::Error` when the limit is passed, so a
/// reader stack can report it through `Read` and the caller can tell it from
/// a malformed stream.
#[derive(Debug)]
struct LimitPassed(usize);

impl std::fmt::Display for LimitPassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch decompresses to more than {} bytes", self.0)
    }
}

impl std::error::Error for LimitPassed {}

fn limit_passed(limit: usize) -> io::Error {
    io::Error::other(LimitPassed(limit))
}

/// Name of a codec id, for messages.
pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

/// Sort an error from reading a [`Decompressed`] into too large or corrupt.
pub fn classify(codec: u8, e: io::Error) -> DecompressError {
    if let Some(LimitPassed(limit)) = e.get_ref().and_then(|inner| inner.downcast_ref::<LimitPassed>()) {
        return DecompressError::TooLarge { limit: *limit };
    }
    DecompressError::Corrupt(format!("malformed {} data: {e}", codec_name(codec)))
}

/// A reader of a batch body's decompressed bytes that fails once more than
/// `limit` bytes came out.
pub struct Decompressed<'a> {
    inner: Box<dyn Read + 'a>,
    produced: usize,
    limit: usize,
}

impl Read for Decompressed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for at most one byte past the limit: enough to see it passed.
        let room = (self.limit - self.produced).saturating_add(1).min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.produced += n;
        if self.produced > self.limit {
            return Err(limit_passed(self.limit));
        }
        Ok(n)
    }
}

/// The decompressed bytes of `body` (a batch's records section) compressed
/// with `codec`, as a reader bounded by `limit`. Uncompressed bodies are
/// bounded by their own size only: the limit is never below
/// `max.message.bytes`, the bound on the batch itself.
pub fn reader(codec: u8, body: &[u8], limit: usize) -> Result<Decompressed<'_>, DecompressError> {
    let limit = if codec == 0 { usize::MAX } else { limit };
    let inner: Box<dyn Read + '_> = match codec {
        0 => Box::new(body),
        1 => Box::new(flate2::read::MultiGzDecoder::new(body)),
        2 => Box::new(SnappyReader::new(body, limit)),
        3 => Box::new(lz4::Decoder::new(body).map_err(|e| classify(codec, e))?),
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| classify(codec, e))?;
            d.window_log_max(zstd_window_log_max(limit)).map_err(|e| classify(codec, e))?;
            Box::new(d)
        }
        other => return Err(DecompressError::Corrupt(format!("unknown compression codec {other}"))),
    };
    Ok(Decompressed { inner, produced: 0, limit })
}

/// The whole decompressed body, at most `limit` bytes.
pub fn decompress(codec: u8, body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader(codec, body, limit)?.read_to_end(&mut out).map_err(|e| classify(codec, e))?;
    Ok(out)
}

/// zstd sizes its window buffer from the frame header, up to the window log
/// allowed. Streaming encoders (Kafka's producer among them) declare a window
/// from their level, not from the data: 2 MiB at the default level, 8 MiB up
/// to level 19. So allow at least 2^23, at most what the limit could use,
/// and never past zstd's own default ceiling of 2^27.
fn zstd_window_log_max(limit: usize) -> u32 {
    let bits = usize::BITS - limit.max(1).next_power_of_two().leading_zeros() - 1;
    bits.clamp(23, 27)
}

/// Snappy as Kafka frames it: the xerial header, then blocks of
/// (u32 compressed length, raw snappy block); or, from some producers, one
/// raw block with no header. Each block states its decompressed length up
/// front; that claim is checked against what is left of the limit before
/// any buffer is sized by it.
struct SnappyReader<'a> {
    input: &'a [u8],
    limit: usize,
    produced: usize,
    raw: bool,
    started: bool,
    block: Vec<u8>,
    pos: usize,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limit: usize) -> Self {
        let raw = !input.starts_with(XERIAL_MAGIC);
        let input = if raw { input } else { &input[XERIAL_MAGIC.len()..] };
        SnappyReader { input, limit, produced: 0, raw, started: false, block: Vec::new(), pos: 0 }
    }

    /// Decode the next block into `self.block`; false at the end of input.
    fn next_block(&mut self) -> io::Result<bool> {
        let compressed = if self.raw {
            if self.started {
                return Ok(false);
            }
            if self.input.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "empty snappy stream"));
            }
            std::mem::take(&mut self.input)
        } else {
            if self.input.is_empty() {
                return Ok(false);
            }
            if self.input.len() < 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "snappy block length cut short"));
            }
            let len = u32::from_be_bytes(self.input[..4].try_into().expect("four bytes")) as usize;
            let rest = &self.input[4..];
            if len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snappy block of {len} bytes but {} remain", rest.len()),
                ));
            }
            self.input = &rest[len..];
            &rest[..len]
        };
        self.started = true;
        let claimed = decompress_len(compressed).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if claimed > self.limit - self.produced {
            return Err(limit_passed(self.limit));
        }
        self.block.clear();
        self.block.resize(claimed, 0);
        let n = SnappyDecoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.block.truncate(n);
        self.produced += n;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = (self.block.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read exactly one byte, or `None` at the end of the stream.
pub(crate) fn read_byte(r: &mut dyn BufRead) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// `n` zero bytes compressed with `codec` the way Kafka producers frame it.
    pub(crate) fn compress(codec: u8, data: &[u8]) -> Vec<u8> {
        match codec {
            0 => data.to_vec(),
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            2 => {
                let mut out = XERIAL_MAGIC.to_vec();
                for chunk in data.chunks(32 << 10) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(data).unwrap();
                let (out, r) = e.finish();
                r.unwrap();
                out
            }
            4 => zstd::stream::encode_all(data, 19).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trips_under_the_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in 0..=4 {
            let c = compress(codec, &data);
            assert_eq!(decompress(codec, &c, data.len()).unwrap(), data, "{}", codec_name(codec));
        }
    }

    #[test]
    fn stops_at_the_limit_for_every_codec() {
        // 8 MiB of zeros compresses to a few KiB with every codec.
        let zeros = vec![0u8; 8 << 20];
        for codec in 1..=4 {
            let bomb = compress(codec, &zeros);
            // Snappy expands at most about 20 times; the others far more.
            assert!(bomb.len() * 16 < zeros.len(), "{}: {} bytes", codec_name(codec), bomb.len());
            assert_eq!(
                decompress(codec, &bomb, 1 << 20),
                Err(DecompressError::TooLarge { limit: 1 << 20 }),
                "{}",
                codec_name(codec)
            );
            assert_eq!(decompress(codec, &bomb, 8 << 20).unwrap().len(), 8 << 20);
        }
    }

    #[test]
    fn snappy_claims_are_checked_before_allocating() {
        // A raw block whose varint header claims ~4 GiB: refused without the buffer.
        let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(decompress(2, &raw, 1 << 20), Err(DecompressError::TooLarge { limit: 1 << 20 }));
        // The same claim inside xerial framing.
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        framed.extend_from_slice(&raw);
        assert_eq!(decompress(2, &framed, 1 << 20), Err(DecompressError::TooLarge { limit: 1 << 20 }));
        // A block length past the input is corrupt, not a read past the end.
        let mut cut = XERIAL_MAGIC.to_vec();
        cut.extend_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(decompress(2, &cut, 1 << 20), Err(DecompressError::Corrupt(_))));
    }

    #[test]
    fn a_zstd_frame_claiming_a_huge_window_is_refused() {
        // Frame header: magic, descriptor with a window descriptor byte
        // claiming a 2^41-byte window, then nothing.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0, 0];
        assert!(decompress(4, &frame, 1 << 20).is_err());
    }

    #[test]
    fn garbage_is_corrupt_for_every_codec() {
        for codec in 1..=4 {
            let e = decompress(codec, b"definitely not compressed data", 1 << 20).unwrap_err();
            assert!(matches!(e, DecompressError::Corrupt(_)), "{}: {e:?}", codec_name(codec));
        }
        assert!(matches!(decompress(7, b"", 10), Err(DecompressError::Corrupt(_))));
    }
}
