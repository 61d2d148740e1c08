//! Domain-separated BLAKE3 (spec: escx-format.md §2).
//!
//! Content is hashed with plain BLAKE3, so `b3sum` over a section's stored bytes gives the
//! hash in the section table. Every *derived* value (the package root, sealing keys) goes
//! through `blake3::derive_key` with its own context string; all of them are listed here and
//! nowhere else, and the spec lists the same strings.

use std::io::Read;
use std::sync::mpsc;

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

/// Every context string escx uses, for the spec test that keeps the two in step.
pub const ALL_CONTEXTS: &[&str] =
    &[CONTEXT_PACKAGE_ROOT, CONTEXT_KEY_FILE_SEAL, CONTEXT_REGISTRY_STATE, CONTEXT_SEALED_BOX];

/// Inputs at least this long are hashed with BLAKE3's multithreaded `update_rayon`;
/// below it, thread hand-off costs more than it saves.
const PARALLEL_THRESHOLD_BYTES: usize = 128 * 1024;

/// Read size of the pipelined hasher. Measured on the 2-core reference machine: 2–4 MiB
/// chunks keep both cores busy hashing while a third thread reads; 32 MiB chunks lose the
/// overlap and are 2x slower.
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
/// One thread reads the next chunk while the rayon pool hashes the current one, so the
/// read and the hash overlap; at most three chunks are alive at once, so memory stays at
/// a few MiB whatever the length. A reader that ends early yields `UnexpectedEof`.
pub fn hash_exact<R: Read + Send>(
    reader: &mut R,
    length_bytes: u64,
    progress: &dyn Progress,
) -> std::io::Result<[u8; HASH_BYTES]> {
    let mut hasher = blake3::Hasher::new();
    if length_bytes <= PIPELINE_CHUNK_BYTES as u64 {
        // Small input: one read, no thread.
        let mut buffer = vec![0u8; length_bytes as usize];
        reader.read_exact(&mut buffer)?;
        update(&mut hasher, &buffer);
        progress.advance(length_bytes);
        return Ok(*hasher.finalize().as_bytes());
    }
    std::thread::scope(|scope| {
        // `full` carries read chunks to the hasher; `empty` returns them for reuse.
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            // Cannot fail: the receiver is alive and the channel has room for both.
            let _ = empty_tx.send(vec![0u8; PIPELINE_CHUNK_BYTES]);
        }
        let read_thread = scope.spawn(move || -> std::io::Result<()> {
            let mut remaining_bytes = length_bytes;
            while remaining_bytes > 0 {
                let Ok(mut chunk) = empty_rx.recv() else {
                    return Ok(()); // hasher stopped; nothing more to do
                };
                let chunk_bytes = remaining_bytes.min(PIPELINE_CHUNK_BYTES as u64) as usize;
                chunk.resize(chunk_bytes, 0);
                reader.read_exact(&mut chunk)?;
                remaining_bytes -= chunk_bytes as u64;
                if full_tx.send(chunk).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        for chunk in full_rx.iter() {
            update(&mut hasher, &chunk);
            progress.advance(chunk.len() as u64);
            let _ = empty_tx.send(chunk);
        }
        read_thread.join().unwrap_or_else(|_| Err(std::io::Error::other("hash reader thread panicked")))
    })?;
    Ok(*hasher.finalize().as_bytes())
}

/// A `Read` adapter that hashes every byte passing through it; used where bytes are
/// consumed by a decoder (zstd, tar) and must be hashed in the same pass.
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes_read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: blake3::Hasher::new(), bytes_read: 0 }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
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
        let data: Vec<u8> = (0..(PIPELINE_CHUNK_BYTES * 3 + 12345)).map(|i| (i * 31 % 251) as u8).collect();
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
