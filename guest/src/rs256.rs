//! The RS256 primitive: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2).
//!
//! Why not the `jsonwebtoken` crate: its rust_crypto backend pins rsa 0.9
//! (about 3x slower inside wasm than rsa 0.10), and its decoder neither
//! refuses duplicate JSON members nor type-checks registered claims the way
//! this verifier must. So parsing is done by hand (`token`, `json`) and only
//! the signature check is delegated to rsa 0.10 + sha2.
//!
//! This function applies no key policy (size floor, exponent, JWK rules):
//! that is `jwks`'s job. Keeping them apart lets the Wycheproof vectors,
//! including their e=3 groups, exercise the primitive directly.

use rsa::{BoxedUint, PublicKey};
use sha2::Sha256;

/// Verifies `signature` over `message` with the RSA public key (`n`, `e`)
/// given as unsigned big-endian bytes (leading zero octets allowed here).
///
/// Returns `true` only when the signature is exactly as long as the modulus
/// and the decoded block is the strict PKCS#1 v1.5 encoding of SHA-256
/// (DigestInfo with its NULL parameter). Structurally invalid keys (even or
/// zero modulus, `e < 2`, `e >= n`, modulus outside rsa's 1024..=8192 bits)
/// verify nothing.
pub fn verify_pkcs1v15_sha256(n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    // RFC 8017 §8.2.2 step 1: the signature is exactly k = len(n) octets.
    // rsa checks this as well; checking here keeps the rule visible.
    if n.is_empty() || signature.len() != n.len() {
        return false;
    }
    // rsa rejects exponents above 2^33 - 1; more than 8 octets cannot fit.
    if e.is_empty() || e.len() > 8 {
        return false;
    }
    let Ok(e) = BoxedUint::from_be_slice(e, 64) else {
        return false;
    };
    let n = BoxedUint::from_be_slice_vartime(n);
    let Ok(key) = PublicKey::new(n, e) else {
        return false;
    };
    key.pkcs1v15_verify::<Sha256>(message, signature).is_ok()
}

/// `bytes` without its leading zero octets.
pub fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}
