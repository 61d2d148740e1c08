//! Domain-separated BLAKE3 (spec: escx-format.md §2).
//!
//! Content is hashed with plain BLAKE3, so `b3sum` over a section's stored bytes gives the
//! hash in the section table. Every *derived* value (the package root, sealing keys) goes
//! through `blake3::derive_key` with its own context string; all of them are listed here and
//! nowhere else, and the spec lists the same strings.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use crate::progress::Progress;

/// Length of every BLAKE3 output escx uses.
pub const HASH_BYTES: usize = 32;

/// `derive_key` context for the package root over header || section table.
pub const CONTEXT_PACKAGE_ROOT: &str = "escx v1 package root";
/// `derive_key` context turning an Argon2id output into a secret-key-file sealing key.
pub const CONTEXT_KEY_FILE_SEAL: &str = "escx v1 secret key file seal";

/// `derive_key` context naming a registry's client state by its index signers
/// (registry.md §5).
pub const CONTEXT_REGISTRY_STATE: &str = "escx v1 registry state id";

/// `derive_key` context turning an ML-KEM shared secret into a sealed-box key
/// (escx-format.md §14).
pub const CONTEXT_SEALED_BOX: &str = "escx v1 sealed box key";

/// `derive_key` context of the digest a sealed content key is bound to: package name,
/// version and payload hash (escx-format.md §15.2).
pub const CONTEXT_CONTENT_BINDING: &str = "escx v1 content key binding";

/// `derive_key` context of a content key's fingerprint, by which an issuer recognises a
/// key registered before without comparing keys (escx-format.md §15.3).
pub const CONTEXT_CONTENT_FINGERPRINT: &str = "escx v1 content key fingerprint";

/// Every context string escx uses, for the spec test that keeps the two in step.
pub const ALL_CONTEXTS: &[&str] = &[
    CONTEXT_PACKAGE_ROOT,
    CONTEXT_KEY_FILE_SEAL,
    CONTEXT_REGISTRY_STATE,
    CONTEXT_SEALED_BOX,
    CONTEXT_CONTENT_BINDING,
    CONTEXT_CONTENT_FINGERPRINT,
];

/// Inputs at least this long are hashed with BLAKE3's multithreaded `update_rayon`;
/// below it, thread hand-off costs more than it saves.
const PARALLEL_THRESHOLD_BYTES: usize = 128 * 1024;

/// Read size of the pipelined hasher. Measured on the 2-core reference machine: 2–4 MiB
/// chunks keep both cores busy reading and hashing; 32 MiB chunks lose the overlap and
/// are 2x slower.
pub const PIPELINE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Plain BLAKE3 of `bytes` (what `b3sum` prints).
pub fn content_hash(bytes: &[u8]) -> [u8; HASH_BYTES] {
    let mut hasher = blake3::Hasher::new();
    update(&mut hasher, bytes);
    *hasher.finalize().as_bytes()
}

/// The package root: `derive_key("escx v1 package root", header || table)`.
pub fn package_root(header_and_table: &[u8]) -> [u8; HASH_BYTES] {
    blake3::derive_key(CONTEXT_PACKAGE_ROOT, header_and_table)
}

/// Feeds `bytes` to `hasher`, in parallel when it is large enough to pay off.
pub fn update(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= PARALLEL_THRESHOLD_BYTES {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
}

/// Hashes exactly `length_bytes` from `reader` with plain BLAKE3.
///
/// The next chunk is read while the current one is hashed, both as jobs of the rayon
/// pool, so the read and the hash overlap; a handful of chunks are alive at once, so
/// memory stays at a few tens of MiB whatever the length. A reader that ends early yields
/// `UnexpectedEof`.
pub fn hash_exact<R: Read + Send>(
    reader: &mut R,
    length_bytes: u64,
    progress: &dyn Progress,
) -> std::io::Result<[u8; HASH_BYTES]> {
    let mut hasher = blake3::Hasher::new();
    if let Some(small) = usize::try_from(length_bytes).ok().filter(|&n| n <= PIPELINE_CHUNK_BYTES) {
        // Small input: one read, no thread.
        let mut buffer = vec![0u8; small];
        reader.read_exact(&mut buffer)?;
        update(&mut hasher, &buffer);
        progress.advance(length_bytes);
        return Ok(*hasher.finalize().as_bytes());
    }
    // The pipeline of `hash_and_consume`, with nobody consuming.
    hash_and_consume(reader, length_bytes, progress, drop).map(|(hash, ())| hash)
}

/// Hashes exactly `length_bytes` from `reader`, as [`hash_exact`], and in the same pass
/// hands every chunk to `consume`, which runs on its own thread over a [`ChunkReader`]:
/// one read of the file serves both, so what `consume` decides about is exactly what was
/// hashed. (Reading the file twice, once to hash and once to decode, would let a file
/// that changes in between be decoded from bytes that were never hashed.)
///
/// `consume` sees the bytes before their hash is known: callers MUST treat its result as
/// void when the hash does not match, and use this only for decoders that are safe on any
/// input (the archive walker, not zstd). If `consume` returns early, hashing goes on.
/// `consume` must not use the rayon pool: a pool worker may be blocked handing it the
/// next chunk, and a pool of one thread would then deadlock.
pub(crate) fn hash_and_consume<R, T, F>(
    reader: &mut R,
    length_bytes: u64,
    progress: &dyn Progress,
    consume: F,
) -> std::io::Result<([u8; HASH_BYTES], T)>
where
    R: Read + Send,
    T: Send,
    F: FnOnce(ChunkReader) -> T + Send,
{
    let mut hasher = blake3::Hasher::new();
    std::thread::scope(|scope| {
        let (tap_tx, tap_rx) = mpsc::sync_channel::<(u64, Arc<Chunk>)>(2);
        // Buffers come back here when both sides are done with them, so a long section
        // reuses a handful of buffers instead of allocating one per chunk.
        let (pool_tx, pool_rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_ALIVE_MAX);
        // Where the consumer will read next: chunks that end before it (file contents the
        // archive walker seeks over) are not handed to it at all.
        let wanted_from = Arc::new(AtomicU64::new(0));
        let consumer = {
            let wanted_from = Arc::clone(&wanted_from);
            scope.spawn(move || consume(ChunkReader::new(tap_rx, length_bytes, wanted_from)))
        };
        let mut start = 0u64;
        let mut tap = Some(tap_tx);
        // Reads the next chunk (`None` at the end) and hands it to the consumer.
        let mut read_next = move || -> std::io::Result<Option<Arc<Chunk>>> {
            if start >= length_bytes {
                return Ok(None);
            }
            let chunk_bytes = usize::try_from(length_bytes - start)
                .map_or(PIPELINE_CHUNK_BYTES, |left| left.min(PIPELINE_CHUNK_BYTES));
            // A new buffer comes zeroed from the allocator (pages mapped lazily), as
            // `vec!` does; a recycled one is only cut to length.
            let mut bytes = pool_rx.try_recv().unwrap_or_else(|_| vec![0u8; PIPELINE_CHUNK_BYTES]);
            bytes.resize(chunk_bytes, 0);
            reader.read_exact(&mut bytes)?;
            let chunk = Arc::new(Chunk { bytes, pool: pool_tx.clone() });
            let end = start + chunk_bytes as u64;
            // A consumer that stopped early (an error, or it needed no more) closes its
            // end; the hash still needs every byte.
            if end > wanted_from.load(Ordering::Acquire)
                && tap.as_ref().is_some_and(|t| t.send((start, chunk.clone())).is_err())
            {
                tap = None;
            }
            start = end;
            Ok(Some(chunk))
        };
        // Chunk k is hashed while chunk k + 1 is read, both as jobs of the rayon pool: the
        // read and the hash share the pool's threads (one per core) by work stealing, and
        // whichever finishes first helps with the hash. (A reader thread of its own
        // competed with both hashing threads on a 2-core machine: issue 27, item 19.)
        let read = rayon::scope(|_| -> std::io::Result<()> {
            let mut current = read_next()?;
            while let Some(chunk) = current {
                let ((), next) = rayon::join(
                    || {
                        update(&mut hasher, &chunk);
                        progress.advance(chunk.len() as u64);
                    },
                    &mut read_next,
                );
                current = next?;
            }
            Ok(())
        });
        // Dropping the reader closes the consumer's channel: it sees the end of the stream.
        drop(read_next);
        let consumed =
            consumer.join().map_err(|_| std::io::Error::other("section decoder thread panicked"))?;
        read.map(|()| consumed)
    })
    .map(|consumed| (*hasher.finalize().as_bytes(), consumed))
}

/// Most pipeline buffers alive at once in [`hash_and_consume`] (in both channels, being
/// hashed, being read, in the pool).
const CHUNKS_ALIVE_MAX: usize = 8;

/// One buffer of [`hash_and_consume`]; goes back to the pool when the last holder drops it.
struct Chunk {
    bytes: Vec<u8>,
    pool: mpsc::SyncSender<Vec<u8>>,
}

impl std::ops::Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let _ = self.pool.try_send(std::mem::take(&mut self.bytes));
    }
}

/// The consumer's side of [`hash_and_consume`]: the chunks as one byte stream, with
/// forward seeks (the reader is told, and does not even hand over the chunks skipped) and
/// backward seeks into the current or the previous chunk received (the tar reader steps
/// back over an end-of-archive block it peeked at). Seeking back further is an error.
pub(crate) struct ChunkReader {
    chunks: mpsc::Receiver<(u64, Arc<Chunk>)>,
    /// The chunk before `current` (by stream position `previous_start`), kept for short
    /// backward seeks.
    previous: Option<(u64, Arc<Chunk>)>,
    current: Option<(u64, Arc<Chunk>)>,
    /// Stream position of the next byte to read.
    position: u64,
    length_bytes: u64,
    /// Shared with the reader: no byte before this will be read.
    wanted_from: Arc<AtomicU64>,
}

impl ChunkReader {
    fn new(
        chunks: mpsc::Receiver<(u64, Arc<Chunk>)>,
        length_bytes: u64,
        wanted_from: Arc<AtomicU64>,
    ) -> Self {
        Self { chunks, previous: None, current: None, position: 0, length_bytes, wanted_from }
    }

    /// The chunk holding `self.position` and the offset in it, fetching chunks as needed.
    /// `None` at the end of the stream (or if the reader stopped).
    fn locate(&mut self) -> Option<(Arc<Chunk>, usize)> {
        loop {
            for (start, chunk) in [&self.previous, &self.current].into_iter().flatten() {
                if (*start..start + chunk.len() as u64).contains(&self.position) {
                    let offset = usize::try_from(self.position - start).ok()?;
                    return Some((chunk.clone(), offset));
                }
            }
            let next = self.chunks.recv().ok()?;
            self.previous = self.current.replace(next);
        }
    }

    /// The earliest position a backward seek may reach.
    fn earliest(&self) -> u64 {
        self.previous.as_ref().or(self.current.as_ref()).map_or(0, |(start, _)| *start)
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((chunk, offset)) = self.locate() else { return Ok(0) };
        let n = buf.len().min(chunk.len() - offset);
        buf[..n].copy_from_slice(&chunk[offset..offset + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for ChunkReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(at) => Some(at),
            std::io::SeekFrom::End(delta) => self.length_bytes.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the section"))?;
        if target < self.earliest() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the section is read once: no seeking back past the previous chunk",
            ));
        }
        // Forward: the reader stops handing over chunks that end before the new position.
        // Positions past the end read as end-of-file.
        self.position = target.min(self.length_bytes);
        self.wanted_from.fetch_max(self.position, Ordering::AcqRel);
        Ok(target)
    }
}

/// A `Read` adapter that hashes every byte passing through it; used where bytes are
/// consumed by a decoder (zstd, tar) and must be hashed in the same pass.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes_read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: blake3::Hasher::new(), bytes_read: 0 }
    }

    /// Reads and hashes whatever `inner` still holds, then returns the hash and the total
    /// number of bytes hashed.
    pub fn finish(mut self) -> std::io::Result<([u8; HASH_BYTES], u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((*self.hasher.finalize().as_bytes(), self.bytes_read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read_bytes = self.inner.read(buf)?;
        update(&mut self.hasher, &buf[..read_bytes]);
        self.bytes_read += read_bytes as u64;
        Ok(read_bytes)
    }
}

/// A `Write` adapter that hashes everything written through it (in parallel for large
/// writes), for copies that must hash what they write in the same pass.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: std::io::Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: blake3::Hasher::new() }
    }

    /// The hash of everything written so far.
    pub fn finalize(self) -> [u8; HASH_BYTES] {
        *self.hasher.finalize().as_bytes()
    }

    /// Flushes the inner writer, then returns the hash.
    pub(crate) fn finalize_flushed(mut self) -> std::io::Result<[u8; HASH_BYTES]> {
        self.inner.flush()?;
        Ok(*self.hasher.finalize().as_bytes())
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        update(&mut self.hasher, &buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    #[test]
    fn pipelined_hash_equals_one_shot_hash() {
        // Spans several pipeline chunks with a ragged tail.
        let data: Vec<u8> =
            (0..(PIPELINE_CHUNK_BYTES * 3 + 12345)).map(|i| u8::try_from(i * 31 % 251).unwrap()).collect();
        let expected = *blake3::hash(&data).as_bytes();
        let got = hash_exact(&mut &data[..], data.len() as u64, &NoProgress).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn short_reader_is_an_error_not_a_wrong_hash() {
        let data = vec![7u8; PIPELINE_CHUNK_BYTES + 10];
        let err = hash_exact(&mut &data[..], data.len() as u64 + 1, &NoProgress).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn hashing_reader_sees_every_byte() {
        let data = vec![3u8; 300_000];
        let mut reader = HashingReader::new(&data[..]);
        let mut first = [0u8; 1000];
        reader.read_exact(&mut first).unwrap();
        let (hash, length) = reader.finish().unwrap();
        assert_eq!(length, data.len() as u64);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn root_is_domain_separated_from_plain_hash() {
        let input = b"header and table";
        assert_ne!(package_root(input), content_hash(input));
        assert_eq!(package_root(input), blake3::derive_key(CONTEXT_PACKAGE_ROOT, input));
    }
}
