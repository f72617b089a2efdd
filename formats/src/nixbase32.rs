//! Nix's own base-32 encoding (used in store paths, narinfo hashes and `CA:` fields).
//!
//! It is not RFC 4648: the alphabet omits `e o u t` and the bytes are read from the end,
//! so a digest's last byte drives the first character.

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the encoding of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = (bytes[i] as u16) >> j;
        let high = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes `text` into `out_len` bytes; `None` when a character is not in the alphabet,
/// the length is wrong, or unused high bits are set.
pub fn decode(text: &str, out_len: usize) -> Option<Vec<u8>> {
    if text.len() != encoded_len(out_len) {
        return None;
    }
    let mut out = vec![0u8; out_len];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < out_len {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(&text, len).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn matches_nix_for_sha256_of_empty_string() {
        // `nix-hash --type sha256 --to-base32 e3b0c442...b855` prints this.
        let digest = crate::hash::HashAlgo::Sha256.digest(b"");
        assert_eq!(
            encode(&digest),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn rejects_bad_characters_and_lengths() {
        assert!(decode("e", 0).is_none());
        assert!(decode("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7e", 32).is_none());
        assert!(decode("00", 32).is_none());
        // 52 chars encode 260 bits; the top 4 must be zero for 32 bytes.
        assert!(decode(&format!("z{}", "0".repeat(51)), 32).is_none());
    }
}
