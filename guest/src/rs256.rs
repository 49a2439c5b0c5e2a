//! The RS256 primitive: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.2).
//!
//! Why not the `jsonwebtoken` crate: its rust_crypto backend pins rsa 0.9,
//! and its decoder neither refuses duplicate JSON members nor type-checks
//! registered claims the way this verifier must. So parsing is done by hand
//! (`token`, `json`), and so is the arithmetic (`montgomery`): the `rsa`
//! crate's is several times slower inside wasm (see that module). The `rsa`
//! crate stays the reference: the fuzz target `rs256` compares the two.
//!
//! This function applies no key policy (size floor, exponent, JWK rules):
//! that is `jwks`'s job. Keeping them apart lets the Wycheproof vectors,
//! including their e=3 groups, exercise the primitive directly.

use crate::prelude::*;

use sha2::{Digest, Sha256};

use crate::montgomery;

/// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// Moduli the primitive works with, in bits (the key policy is narrower).
pub const MODULUS_BITS: core::ops::RangeInclusive<usize> = 1024..=8192;

/// Verifies `signature` over `message` with the RSA public key (`n`, `e`)
/// given as unsigned big-endian bytes (leading zero octets allowed here).
///
/// Returns `true` only when the signature is exactly as long as the modulus,
/// is below it, and `signature^e mod n` is, byte for byte, the whole
/// EMSA-PKCS1-v1_5 block of SHA-256(message) (DigestInfo with its NULL
/// parameter). Structurally invalid keys (even modulus, `e < 2`, `e` over
/// 64 bits, modulus outside [`MODULUS_BITS`]) verify nothing.
pub fn verify_pkcs1v15_sha256(n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    verify_with(montgomery::mod_pow, n, e, message, signature)
}

/// Signature of `montgomery::{limb32, limb64}::mod_pow`.
pub type ModPow = fn(&[u8], &[u8], &[u8]) -> Vec<u8>;

/// [`verify_pkcs1v15_sha256`] with the given arithmetic, so that tests run
/// the vectors through both limb widths whatever the target.
pub fn verify_with(mod_pow: ModPow, n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    // RFC 8017 §8.2.2 step 1: the signature is exactly k = len(n) octets.
    if n.is_empty() || signature.len() != n.len() {
        return false;
    }
    let n_bits = n.len() * 8 - n[0].leading_zeros() as usize;
    let e_is_below_2 = e.len() <= 1 && e.first().is_none_or(|&b| b < 2);
    if !MODULUS_BITS.contains(&n_bits) || n[n.len() - 1] & 1 == 0 || e_is_below_2 || e.len() > 8 {
        return false;
    }
    // Step 2a (RSAVP1): the signature representative must be below n.
    // Equal lengths, so big-endian byte order is numeric order.
    if signature >= n {
        return false;
    }
    mod_pow(signature, e, n) == encode(message, n.len())
}

/// EMSA-PKCS1-v1_5 with SHA-256: `00 01 FF…FF 00 DigestInfo hash`, `k` bytes.
fn encode(message: &[u8], k: usize) -> Vec<u8> {
    let hash = Sha256::digest(message);
    let t_len = SHA256_DIGEST_INFO.len() + hash.len();
    let mut block = Vec::with_capacity(k);
    block.extend_from_slice(&[0x00, 0x01]);
    block.resize(k - t_len - 1, 0xff);
    block.push(0x00);
    block.extend_from_slice(&SHA256_DIGEST_INFO);
    block.extend_from_slice(&hash);
    block
}

/// `bytes` without its leading zero octets.
pub fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}
