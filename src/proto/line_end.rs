//! Finding the LF that ends each line of a buffer full of short lines, 64 bytes at a time.
//!
//! A server's FETCH answers are many lines of 20-100 bytes. Searching each one with `memchr`
//! pays its setup (dispatch, alignment, the short-input path) per line, about as much as the
//! search itself. [`LineEnds`] instead compares a 64-byte block of the buffer with LF once,
//! keeps the result as a bit mask, and answers every line that ends inside the block from the
//! mask; literal bytes skipped between lines only move where the next block starts.

/// The LF positions of one buffer, found a 64-byte block at a time.
pub struct LineEnds<'a> {
    /// The buffer searched.
    hay: &'a [u8],
    /// Where the current block starts in `hay`.
    base: usize,
    /// Bit `i` set when `hay[base + i]` is LF (the current block; none before the first).
    mask: u64,
}

impl<'a> LineEnds<'a> {
    /// Searches `hay`; no block is compared until asked.
    pub fn new(hay: &'a [u8]) -> Self {
        LineEnds {
            hay,
            // Far enough from every offset that no offset is taken to be in this block.
            base: usize::MAX - BLOCK,
            mask: 0,
        }
    }

    /// The position of the first LF at or after `from`, if any.
    #[inline]
    pub fn find(&mut self, mut from: usize) -> Option<usize> {
        loop {
            let off = from.wrapping_sub(self.base);
            if off < BLOCK {
                let bits = self.mask >> off;
                if bits != 0 {
                    return Some(from + bits.trailing_zeros() as usize);
                }
                from = self.base + BLOCK;
            }
            let rest = self.hay.get(from..)?;
            let Some(block) = rest.first_chunk::<BLOCK>() else {
                // Under a block left: the plain search.
                return memchr::memchr(b'\n', rest).map(|i| from + i);
            };
            self.base = from;
            self.mask = lf_mask(block);
        }
    }
}

/// Bytes compared at once.
const BLOCK: usize = 64;

/// Bit `i` set when `block[i]` is LF: four 16-byte compares (SSE2 is part of every x86-64).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn lf_mask(block: &[u8; BLOCK]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut mask = 0u64;
    for (i, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is enabled for this build (the cfg above); `part` is 16 readable bytes
        // and the unaligned load has no alignment requirement.
        let bits = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        mask |= u64::from(bits as u32 & 0xffff) << (16 * i);
    }
    mask
}

/// Bit `i` set when `block[i]` is LF.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn lf_mask(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &c)| mask | (u64::from(c == b'\n') << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every LF at or after each `from`, against a plain search.
    fn check(hay: &[u8], froms: &[usize]) {
        let mut ends = LineEnds::new(hay);
        for &from in froms {
            let want = hay
                .get(from..)
                .and_then(|r| r.iter().position(|&c| c == b'\n'))
                .map(|i| from + i);
            assert_eq!(
                ends.find(from),
                want,
                "from {from} in {}",
                hay.escape_ascii()
            );
        }
    }

    #[test]
    fn lines_across_blocks() {
        let mut hay = Vec::new();
        for n in 0..40 {
            hay.extend(std::iter::repeat_n(b'x', n));
            hay.push(b'\n');
        }
        let mut froms = vec![0];
        let mut at = 0;
        while let Some(i) = hay[at..].iter().position(|&c| c == b'\n') {
            at += i + 1;
            froms.push(at);
        }
        check(&hay, &froms);
        check(&hay, &[5, 3, 700, 64, 63, 128, 0, hay.len(), hay.len() + 1]);
        check(b"", &[0, 1]);
        check(&[b'\n'; 130], &(0..132).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        #[test]
        fn finds_what_a_plain_search_finds(
            hay in proptest::collection::vec(proptest::sample::select(b"\nab\r\xff".to_vec()), 0..300),
            froms in proptest::collection::vec(0usize..310, 0..40),
        ) {
            check(&hay, &froms);
        }
    }
}
