//! Case-insensitive keyword tables: command names, response words, status conditions.
//!
//! ```text
//! atom = 1*ATOM-CHAR        ; keywords are atoms, compared ASCII case-insensitively
//! ```
//!
//! Every server message and every command looks a word up in one of these tables, so a lookup
//! must cost little: a word of up to [`MAX_LEN`] bytes is folded to upper case and packed, with
//! its length, into one `u128` (its [`Key`]); the table holds its keywords' keys sorted, built at
//! compile time, and a lookup is a binary search over integers. Comparing byte strings entry by
//! entry (as `eq_ignore_ascii_case` over a table does) cost ~140 instructions per lookup on the
//! response classifier's tables, and ~450 for the 37 command names.

/// Longest keyword a table holds (the packed key keeps one byte for the length).
pub const MAX_LEN: usize = 15;

/// A word folded to ASCII upper case and packed with its length: two words have the same key
/// exactly when they are equal ignoring ASCII case (`eq_ignore_ascii_case`).
pub type Key = u128;

/// The key of `word`, or `None` when it is longer than any keyword ([`MAX_LEN`]).
#[inline]
pub fn key(word: &[u8]) -> Option<Key> {
    if word.len() > MAX_LEN {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[0] = word.len() as u8;
    for (slot, &c) in bytes[1..].iter_mut().zip(word) {
        *slot = c.to_ascii_uppercase();
    }
    Some(u128::from_le_bytes(bytes))
}

/// [`key`] at compile time, for building tables; a keyword over [`MAX_LEN`] bytes fails the build.
const fn const_key(word: &[u8]) -> Key {
    assert!(word.len() <= MAX_LEN, "keyword too long for a packed key");
    let mut bytes = [0u8; 16];
    bytes[0] = word.len() as u8;
    let mut i = 0;
    while i < word.len() {
        bytes[i + 1] = word[i].to_ascii_uppercase();
        i += 1;
    }
    u128::from_le_bytes(bytes)
}

/// A keyword table: the keys sorted, each with its value.
#[derive(Debug, Clone, Copy)]
pub struct Keywords<T: Copy, const N: usize> {
    /// The keywords' keys in ascending order (binary-searched).
    keys: [Key; N],
    /// `values[i]` is what `keys[i]` maps to.
    values: [T; N],
}

impl<T: Copy, const N: usize> Keywords<T, N> {
    /// Builds the table at compile time; the same keyword twice (in any case) fails the build.
    pub const fn new(table: [(&[u8], T); N]) -> Self {
        // `N` entries, so this array exists only to be overwritten; any value will do.
        let mut keys = [0; N];
        let mut values = [table[0].1; N];
        let mut i = 0;
        while i < N {
            keys[i] = const_key(table[i].0);
            values[i] = table[i].1;
            i += 1;
        }
        // Insertion sort: tables are small and this runs in the compiler.
        let mut i = 1;
        while i < N {
            let mut j = i;
            while j > 0 && keys[j - 1] >= keys[j] {
                assert!(keys[j - 1] != keys[j], "keyword listed twice");
                let (k, v) = (keys[j], values[j]);
                keys[j] = keys[j - 1];
                values[j] = values[j - 1];
                keys[j - 1] = k;
                values[j - 1] = v;
                j -= 1;
            }
            i += 1;
        }
        Keywords { keys, values }
    }

    /// The value `word` maps to (ASCII case-insensitively), if it is one of the keywords.
    #[inline]
    pub fn get(&self, word: &[u8]) -> Option<T> {
        let key = key(word)?;
        let at = self.keys.binary_search(&key).ok()?;
        self.values.get(at).copied()
    }
}

/// Whether `hay` contains `word` (ASCII letters only), in any case. The session checks every
/// FETCH, STORE and SEARCH for `MODSEQ` and `CHANGEDSINCE`: the word's first letter is found
/// with a vectorised search for both its cases and the rest compared there (a byte loop over
/// the arguments, or a window at every offset, cost 500-700 instructions per command on a
/// header-list FETCH). Setting bit 0x20 folds a letter to lower case, and only that letter's
/// two forms fold to it.
pub fn mentions(hay: &[u8], word: &[u8]) -> bool {
    let Some((&first, rest)) = word.split_first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_uppercase(), first.to_ascii_lowercase(), hay).any(|i| {
        hay.get(i + 1..i + word.len())
            .is_some_and(|w| eq_letters(w, rest))
    })
}

/// Whether `bytes` is `letters` (a keyword of ASCII letters only) in any case. Setting bit 0x20
/// folds a letter to lower case, and only that letter's two forms fold to it, so no other byte
/// can pass. With `letters` a constant the comparison unrolls to a few instructions, where
/// `eq_ignore_ascii_case` folds both sides byte by byte.
#[inline(always)]
pub fn eq_letters(bytes: &[u8], letters: &[u8]) -> bool {
    bytes.len() == letters.len()
        && bytes
            .iter()
            .zip(letters)
            .all(|(&b, &l)| b | 0x20 == l | 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: Keywords<u8, 5> = Keywords::new([
        (b"FETCH", 1),
        (b"EXISTS", 2),
        (b"EXPUNGE", 3),
        (b"", 4),
        (b"GETQUOTAROOTXYZ", 5),
    ]);

    #[test]
    fn finds_every_keyword_in_any_case() {
        assert_eq!(TABLE.get(b"FETCH"), Some(1));
        assert_eq!(TABLE.get(b"fetch"), Some(1));
        assert_eq!(TABLE.get(b"ExIsTs"), Some(2));
        assert_eq!(TABLE.get(b"expunge"), Some(3));
        assert_eq!(TABLE.get(b""), Some(4));
        assert_eq!(TABLE.get(b"getquotarootxyz"), Some(5));
    }

    #[test]
    fn refuses_near_misses() {
        for word in [
            &b"FETC"[..],
            b"FETCHX",
            b"FETCH\0",
            b"\0FETCH",
            b"EXPUNGEEXPUNGEEXPUNGE",
            b"GETQUOTAROOTXYZW",
            b"F\xc5TCH",
        ] {
            assert_eq!(TABLE.get(word), None, "{:?}", String::from_utf8_lossy(word));
        }
    }

    proptest! {
        /// `mentions` agrees with a case-insensitive search of every window.
        #[test]
        fn mentions_is_a_window_search(
            hay in "[a-zA-Z0-9 ()\\[\\].:-]{0,40}",
            word in prop_oneof![Just("MODSEQ"), Just("CHANGEDSINCE"), Just("QRESYNC"), Just("m"), Just("")],
        ) {
            // A hay that holds the word half the time, in a random case.
            let hay = format!("{hay}{}", if hay.len() % 2 == 0 { word.to_ascii_lowercase() } else { String::new() });
            let windows = word.is_empty()
                || hay.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes()));
            prop_assert_eq!(mentions(hay.as_bytes(), word.as_bytes()), windows);
        }

        /// `eq_letters` is `eq_ignore_ascii_case` for keywords of letters.
        #[test]
        fn eq_letters_is_eq_ignore_ascii_case_for_letters(
            bytes in proptest::collection::vec(any::<u8>(), 0..9),
            letters in "[a-zA-Z]{0,8}",
        ) {
            prop_assert_eq!(
                eq_letters(&bytes, letters.as_bytes()),
                bytes.eq_ignore_ascii_case(letters.as_bytes())
            );
            prop_assert!(eq_letters(&letters.to_ascii_uppercase().into_bytes(), letters.as_bytes()));
        }

        /// Two words share a key exactly when `eq_ignore_ascii_case` says they are equal.
        #[test]
        fn key_is_eq_ignore_ascii_case(
            a in proptest::collection::vec(any::<u8>(), 0..=MAX_LEN),
            b in proptest::collection::vec(any::<u8>(), 0..=MAX_LEN),
            fold in any::<bool>(),
        ) {
            // Half the time compare a word with a case-changed copy of itself.
            let b = if fold { a.iter().map(|c| c ^ (u8::from(c.is_ascii_alphabetic()) << 5)).collect() } else { b };
            prop_assert_eq!(key(&a) == key(&b), a.eq_ignore_ascii_case(&b));
            prop_assert_eq!(key(&a), Some(const_key(&a)));
        }

        /// A lookup answers as a linear `eq_ignore_ascii_case` search of the same table would.
        #[test]
        fn get_matches_a_linear_search(word in "[a-zA-Z\\x00-\\x7f]{0,17}") {
            let list: [(&[u8], u8); 5] = [
                (b"FETCH", 1), (b"EXISTS", 2), (b"EXPUNGE", 3), (b"", 4), (b"GETQUOTAROOTXYZ", 5),
            ];
            let linear = list.iter().find(|(k, _)| k.eq_ignore_ascii_case(word.as_bytes())).map(|&(_, v)| v);
            prop_assert_eq!(TABLE.get(word.as_bytes()), linear);
        }
    }
}
