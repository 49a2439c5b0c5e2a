//! Canonical base64url (RFC 4648 §5, RFC 7515 §2): no padding, no whitespace,
//! no characters outside the URL-safe alphabet, and no stray bits in the last
//! character. Each byte string then has exactly one accepted encoding, so a
//! token cannot be altered without changing its signing input.

use crate::prelude::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Decodes `text` if, and only if, it is the canonical base64url encoding of
/// some bytes. The empty string decodes to no bytes.
///
/// `URL_SAFE_NO_PAD` with base64 0.22's default config refuses padding
/// (`RequireNone`) and non-zero trailing bits (`decode_allow_trailing_bits`
/// is false); the tests below hold it to that.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn accepts_canonical_text() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(decode("Zg"), Some(b"f".to_vec()));
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
    }

    #[test]
    fn refuses_padding() {
        assert_eq!(decode("Zm8="), None);
        assert_eq!(decode("Zg=="), None);
        assert_eq!(decode("Zm9v===="), None);
    }

    #[test]
    fn refuses_whitespace_and_foreign_characters() {
        for bad in [
            " Zm9v", "Zm9v ", "Zm 9v", "Zm9v\n", "Zm\r\n9v", "Zm\t9v", "Zm+v", "Zm/v", "Zm9v.",
            "Zm9v%3D",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_trailing_bits() {
        // "Zg" is canonical for "f"; "Zh".."Zv" carry the same byte with
        // non-zero unused bits.
        assert_eq!(decode("Zh"), None);
        assert_eq!(decode("Zv"), None);
        // "Zm8" is canonical for "fo"; "Zm9" sets an unused bit.
        assert_eq!(decode("Zm9"), None);
    }

    #[test]
    fn refuses_impossible_lengths() {
        assert_eq!(decode("Z"), None);
        assert_eq!(decode("Zm9vY"), None);
    }
}
