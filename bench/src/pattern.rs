//! The bytes every bulk transfer carries, checked byte for byte at the receiver.
//!
//! The stream is a sequence of 64 KiB blocks: one fixed pseudo-random block whose first 8
//! bytes are replaced by the block's index. A flipped, dropped, duplicated or reordered byte
//! or block fails the check, and checking costs a `memcmp`, not a hash (a SHA-256 of every
//! byte would cap the fastest paths here at the hash's speed).

use std::sync::OnceLock;

/// Block size.
pub const BLOCK: usize = 64 * 1024;

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// Writes block `index` into `out` (which must be `BLOCK` long).
pub fn block(index: u64, out: &mut [u8]) {
    out.copy_from_slice(base());
    out[..8].copy_from_slice(&index.to_le_bytes());
}

/// Checks a received stream piece by piece.
#[derive(Debug, Default)]
pub struct Verifier {
    offset: u64,
    bad: bool,
}

impl Verifier {
    /// Checks the next `data` of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let base = base();
        while !data.is_empty() && !self.bad {
            let index = self.offset / BLOCK as u64;
            let at = (self.offset % BLOCK as u64) as usize;
            let n = data.len().min(BLOCK - at);
            let piece = &data[..n];
            let header = index.to_le_bytes();
            for (i, b) in piece.iter().enumerate().take(8usize.saturating_sub(at)) {
                if *b != header[at + i] {
                    self.bad = true;
                }
            }
            let from = 8usize.saturating_sub(at).min(n);
            if piece[from..] != base[at + from..at + n] {
                self.bad = true;
            }
            self.offset += n as u64;
            data = &data[n..];
        }
    }

    /// Bytes checked so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// True when every byte so far was the expected one.
    pub fn intact(&self) -> bool {
        !self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_accepts_the_pattern_in_any_split_and_rejects_changes() {
        let mut stream = vec![0u8; 3 * BLOCK + 100];
        for (i, chunk) in stream.chunks_mut(BLOCK).enumerate() {
            let mut b = vec![0u8; BLOCK];
            block(i as u64, &mut b);
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        for split in [1, 7, 8, 9, 1000, BLOCK, BLOCK + 3] {
            let mut v = Verifier::default();
            stream.chunks(split).for_each(|c| v.update(c));
            assert!(
                v.intact() && v.len() == stream.len() as u64,
                "split {split}"
            );
        }
        for at in [0, 5, 8, BLOCK + 2, 2 * BLOCK + 50] {
            let mut bad = stream.clone();
            bad[at] ^= 1;
            let mut v = Verifier::default();
            v.update(&bad);
            assert!(!v.intact(), "flip at {at} passed");
        }
        // Two blocks swapped.
        let mut swapped = stream[BLOCK..2 * BLOCK].to_vec();
        swapped.extend_from_slice(&stream[..BLOCK]);
        let mut v = Verifier::default();
        v.update(&swapped);
        assert!(!v.intact());
    }
}
