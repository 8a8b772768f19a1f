//! A deterministic byte stream for large bodies, and a streaming check of it.
//!
//! Hashing 64 MiB byte by byte is slow in a debug build; comparing against a known pattern
//! with `==` on slices is a `memcmp`. Each 64 KiB block carries its own index in its first
//! eight bytes, so a lost, repeated, reordered or corrupted block is caught, not only a
//! wrong length.

use std::sync::LazyLock;

use bytes::Bytes;

pub const BLOCK: usize = 64 * 1024;

/// Pseudo-random filler shared by every block (xorshift: no dependency, same every run).
static FILLER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BLOCK)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
});

/// Block `index` of the pattern.
pub fn block(index: u64) -> Bytes {
    let mut b = FILLER.clone();
    b[..8].copy_from_slice(&index.to_be_bytes());
    Bytes::from(b)
}

/// The first `total` bytes of the pattern, one block per chunk.
pub fn chunks(total: u64) -> impl Iterator<Item = Bytes> + Send {
    let blocks = total.div_ceil(BLOCK as u64);
    (0..blocks).map(move |i| {
        let b = block(i);
        let end = (total - i * BLOCK as u64).min(BLOCK as u64) as usize;
        b.slice(..end)
    })
}

/// Checks a body against the pattern as it streams by, whatever the chunk boundaries.
#[derive(Debug, Default)]
pub struct Check {
    received: u64,
    first_difference: Option<u64>,
}

impl Check {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let index = self.received / BLOCK as u64;
            let within = (self.received % BLOCK as u64) as usize;
            let take = data.len().min(BLOCK - within);
            let (chunk, stamp) = (&data[..take], index.to_be_bytes());
            let stamped = 8usize.saturating_sub(within).min(take);
            let same = chunk[..stamped] == stamp[within.min(8)..within.min(8) + stamped]
                && chunk[stamped..] == FILLER[within + stamped..within + take];
            if !same && self.first_difference.is_none() {
                self.first_difference = Some(self.received);
            }
            self.received += take as u64;
            data = &data[take..];
        }
    }

    /// `"<n> bytes intact"` when every byte matched, or where the first difference was.
    pub fn verdict(&self) -> String {
        match self.first_difference {
            None => format!("{} bytes intact", self.received),
            Some(at) => format!(
                "{} bytes, first difference in the block at offset {at}",
                self.received
            ),
        }
    }
}
