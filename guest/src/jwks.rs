//! The user pool's key set (RFC 7517) and the policy a key must meet before
//! it may verify an RS256 token.
//!
//! Keys come only from the host's key set, looked up by the token's exact
//! `kid`; nothing in the token (`jku`, `x5u`, `jwk`, `x5c`) ever selects a key.
//! One malformed entry does not spoil the others: it is skipped unless the
//! token names it, in which case the token is refused as using an unusable key.

use crate::prelude::*;

use crate::base64url;
use crate::json::{self, Object, Value};
use crate::rs256::strip_leading_zeros;

/// Smallest accepted modulus: 2048 bits (NIST SP 800-131A; Cognito uses 2048).
pub const MIN_MODULUS_BITS: usize = 2048;
/// Largest accepted modulus: bounds the verification work per token.
pub const MAX_MODULUS_BITS: usize = 8192;
/// The only accepted public exponent, F4. Cognito uses it; small exponents
/// (3) invite signature-forgery bugs and big ones cost verification time.
pub const PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// An RSA public key that passed [`check_key_policy`]: canonical big-endian
/// bytes, no leading zero octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    /// The modulus.
    pub n: Vec<u8>,
    /// The public exponent.
    pub e: Vec<u8>,
}

/// Which rule a key broke. Detail for the log; the token is refused as
/// `unusable-key` whichever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// Not a JSON object, or it repeats a member name.
    Malformed,
    /// `kty` is not `RSA`.
    NotRsa,
    /// `use` is present and not `sig`.
    WrongUse,
    /// `alg` is present and not `RS256`.
    WrongAlgorithm,
    /// `key_ops` is present and is not a list of distinct strings with `verify`.
    WrongKeyOps,
    /// `n` or `e` is missing, not a string, or not canonical base64url, or
    /// carries a leading zero octet (RFC 7518 §6.3.1).
    BadEncoding,
    /// The modulus is shorter than [`MIN_MODULUS_BITS`].
    ModulusTooSmall,
    /// The modulus is longer than [`MAX_MODULUS_BITS`].
    ModulusTooLarge,
    /// The modulus is even, so not an RSA modulus.
    EvenModulus,
    /// The exponent is not [`PUBLIC_EXPONENT`].
    WrongExponent,
    /// The modulus has the ROCA fingerprint (CVE-2017-15361): its factors
    /// can be recovered.
    RocaVulnerable,
}

impl KeyProblem {
    /// A short description for the log.
    pub fn describe(self) -> &'static str {
        match self {
            KeyProblem::Malformed => "malformed key entry",
            KeyProblem::NotRsa => "kty is not RSA",
            KeyProblem::WrongUse => "use is not sig",
            KeyProblem::WrongAlgorithm => "alg is not RS256",
            KeyProblem::WrongKeyOps => "key_ops does not allow verify",
            KeyProblem::BadEncoding => "n or e is not canonical base64url",
            KeyProblem::ModulusTooSmall => "modulus shorter than 2048 bits",
            KeyProblem::ModulusTooLarge => "modulus longer than 8192 bits",
            KeyProblem::EvenModulus => "modulus is even",
            KeyProblem::WrongExponent => "exponent is not 65537",
            KeyProblem::RocaVulnerable => "modulus has the ROCA fingerprint",
        }
    }
}

/// What looking a `kid` up in a key set found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// Exactly one entry has the kid and it meets the policy.
    Usable(RsaPublicKey),
    /// Exactly one entry has the kid and it breaks the policy.
    Unusable(KeyProblem),
    /// No entry has the kid.
    NotFound,
    /// Several entries have the kid: which one is meant is unknowable, so
    /// none is used.
    Ambiguous,
}

/// A parsed key set: the entries of its `keys` array, each still unchecked.
#[derive(Debug, Clone)]
pub struct KeySet {
    entries: Vec<Value>,
}

/// Parses a JWKS document. `None` when it is not JSON, not an object, repeats
/// a top-level member, or has no `keys` array: the set as a whole is unusable.
pub fn parse_key_set(document: &str) -> Option<KeySet> {
    let Value::Object(top) = json::parse_value(document.as_bytes()).ok()? else {
        return None;
    };
    if top.has_duplicates() {
        return None;
    }
    let entries = top.get("keys")?.as_array()?.to_vec();
    Some(KeySet { entries })
}

impl KeySet {
    /// Finds the one entry whose `kid` is exactly `kid` and applies the key
    /// policy to it.
    pub fn lookup(&self, kid: &str) -> KeyLookup {
        let mut matches = self.entries.iter().filter_map(|entry| {
            let object = entry.as_object()?;
            (object.get("kid")?.as_str()? == kid).then_some(object)
        });
        match (matches.next(), matches.next()) {
            (None, _) => KeyLookup::NotFound,
            (Some(_), Some(_)) => KeyLookup::Ambiguous,
            (Some(object), None) => match check_key_policy(object) {
                Ok(key) => KeyLookup::Usable(key),
                Err(problem) => KeyLookup::Unusable(problem),
            },
        }
    }

    /// How many entries the set holds, well-formed or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Checks that a JWK may verify RS256 signatures and extracts its key.
pub fn check_key_policy(jwk: &Object) -> Result<RsaPublicKey, KeyProblem> {
    if jwk.has_duplicates_anywhere() {
        return Err(KeyProblem::Malformed);
    }
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err(KeyProblem::NotRsa);
    }
    if let Some(key_use) = jwk.get("use")
        && key_use.as_str() != Some("sig")
    {
        return Err(KeyProblem::WrongUse);
    }
    if let Some(alg) = jwk.get("alg")
        && alg.as_str() != Some("RS256")
    {
        return Err(KeyProblem::WrongAlgorithm);
    }
    if let Some(ops) = jwk.get("key_ops")
        && !key_ops_allow_verify(ops)
    {
        return Err(KeyProblem::WrongKeyOps);
    }
    let n = canonical_unsigned(jwk.get("n")).ok_or(KeyProblem::BadEncoding)?;
    let e = canonical_unsigned(jwk.get("e")).ok_or(KeyProblem::BadEncoding)?;
    let bits = bit_length(&n);
    if bits < MIN_MODULUS_BITS {
        return Err(KeyProblem::ModulusTooSmall);
    }
    if bits > MAX_MODULUS_BITS {
        return Err(KeyProblem::ModulusTooLarge);
    }
    if n.last().is_some_and(|low| low & 1 == 0) {
        return Err(KeyProblem::EvenModulus);
    }
    if e != PUBLIC_EXPONENT {
        return Err(KeyProblem::WrongExponent);
    }
    if has_roca_fingerprint(&n) {
        return Err(KeyProblem::RocaVulnerable);
    }
    Ok(RsaPublicKey { n, e })
}

/// `key_ops` (RFC 7517 §4.3): an array of distinct strings including "verify".
fn key_ops_allow_verify(ops: &Value) -> bool {
    let Some(ops) = ops.as_array() else {
        return false;
    };
    let mut names = Vec::with_capacity(ops.len());
    for op in ops {
        match op.as_str() {
            Some(name) if !names.contains(&name) => names.push(name),
            _ => return false,
        }
    }
    names.contains(&"verify")
}

/// A non-empty canonical base64url string holding an unsigned integer with no
/// leading zero octet (RFC 7518 §6.3.1.1-2: "minimum number of octets").
fn canonical_unsigned(value: Option<&Value>) -> Option<Vec<u8>> {
    let bytes = base64url::decode(value?.as_str()?)?;
    match bytes.first() {
        Some(&first) if first != 0 => Some(bytes),
        _ => None,
    }
}

fn bit_length(unsigned: &[u8]) -> usize {
    let unsigned = strip_leading_zeros(unsigned);
    match unsigned.first() {
        None => 0,
        Some(&top) => unsigned.len() * 8 - top.leading_zeros() as usize,
    }
}

/// The ROCA test (Nemec et al., CCS 2017): keys from the flawed Infineon
/// generator have primes of the form k*M + (65537^a mod M), so for every
/// small prime r dividing M, n mod r lies in the subgroup generated by 65537.
/// For moduli of 2048 bits and more M includes every prime up to 353; a
/// sound random modulus passes all 70 tests with probability about 2^-83.
pub fn has_roca_fingerprint(n: &[u8]) -> bool {
    const SMALL_PRIMES: [u32; 70] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181,
        191, 193, 197, 199, 211, 223, 227, 229, 233, 239, 241, 251, 257, 263, 269, 271, 277, 281,
        283, 293, 307, 311, 313, 317, 331, 337, 347, 349, 353,
    ];
    SMALL_PRIMES
        .iter()
        .all(|&prime| in_subgroup_of_65537(residue(n, prime), prime))
}

/// `n mod prime` for a big-endian `n` and a prime below 2^9, two bytes per
/// step. Each step's remainder comes from a multiplication by a precomputed
/// reciprocal (Barrett) instead of a division, which costs 20 to 40 cycles
/// per step and made this check a few per cent of a whole verification.
fn residue(n: &[u8], prime: u32) -> u32 {
    debug_assert!((3..512).contains(&prime));
    // ⌈2^40 / prime⌉: for x < prime·2^16 < 2^25, x·reciprocal / 2^40 exceeds
    // x / prime by less than 2^-15, too little to carry it past the next
    // integer (the fraction of x / prime is at most 1 - 1/prime), so the
    // quotient below is exact. x·reciprocal < 2^25·2^39 fits in a u64.
    let reciprocal = (1u64 << 40).div_ceil(u64::from(prime));
    let step = |acc: u32, chunk: u32, bits: u32| {
        let x = (acc << bits) | chunk;
        let quotient = ((u64::from(x) * reciprocal) >> 40) as u32;
        x - quotient * prime
    };
    let (odd, pairs) = n.split_at(n.len() % 2);
    let start = odd.first().map_or(0, |&byte| step(0, u32::from(byte), 8));
    pairs.chunks_exact(2).fold(start, |acc, pair| {
        step(acc, u32::from(u16::from_be_bytes([pair[0], pair[1]])), 16)
    })
}

/// Whether `residue` is a power of 65537 modulo `prime`.
fn in_subgroup_of_65537(residue: u32, prime: u32) -> bool {
    let generator = 65537 % prime;
    let mut power = 1;
    loop {
        if power == residue {
            return true;
        }
        power = power * generator % prime;
        if power == 1 {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_set(document: &str) -> KeySet {
        parse_key_set(document).expect("key set parses")
    }

    #[test]
    fn residues_match_the_remainder_operator() {
        // Moduli of odd and even lengths, all-ones bytes (the largest
        // intermediate values) and a pseudo-random pattern.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        let inputs = [
            vec![0xff; 256],
            vec![0xff; 257],
            vec![],
            vec![7],
            random(256),
            random(385),
        ];
        for n in &inputs {
            for prime in [3, 5, 7, 11, 13, 251, 257, 331, 347, 349, 353, 509] {
                let expected = n
                    .iter()
                    .fold(0u32, |acc, &byte| (acc * 256 + u32::from(byte)) % prime);
                assert_eq!(
                    residue(n, prime),
                    expected,
                    "prime {prime}, {} bytes",
                    n.len()
                );
            }
        }
    }

    #[test]
    fn key_sets_without_a_keys_array_are_unusable() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"keys":{}}"#,
            r#"{"keys":"x"}"#,
            r#"{"keys":[],"keys":[]}"#,
        ] {
            assert!(parse_key_set(bad).is_none(), "{bad:?}");
        }
        assert!(parse_key_set(r#"{"keys":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn lookup_distinguishes_missing_duplicate_and_malformed() {
        let set = key_set(
            r#"{"keys":[1,"x",{"kid":5},{"kid":"a","kty":"EC"},{"kid":"d"},{"kid":"d"},
                {"kid":"m","kid":"m"}]}"#,
        );
        assert_eq!(set.lookup("zzz"), KeyLookup::NotFound);
        assert_eq!(set.lookup("d"), KeyLookup::Ambiguous);
        assert_eq!(set.lookup("a"), KeyLookup::Unusable(KeyProblem::NotRsa));
        assert_eq!(set.lookup("m"), KeyLookup::Unusable(KeyProblem::Malformed));
        // Kid matching is exact: no case folding, no trimming.
        assert_eq!(set.lookup("A"), KeyLookup::NotFound);
        assert_eq!(set.lookup("a "), KeyLookup::NotFound);
    }

    #[test]
    fn key_ops_must_be_distinct_strings_with_verify() {
        let ok = |s: &str| key_ops_allow_verify(&json::parse_value(s.as_bytes()).unwrap());
        assert!(ok(r#"["verify"]"#));
        assert!(ok(r#"["sign","verify"]"#));
        assert!(!ok(r#"[]"#));
        assert!(!ok(r#"["encrypt"]"#));
        assert!(!ok(r#""verify""#));
        assert!(!ok(r#"["verify","verify"]"#));
        assert!(!ok(r#"["verify",1]"#));
    }

    #[test]
    fn canonical_unsigned_refuses_leading_zero_and_empty() {
        let v = |s: &str| Value::String(s.to_owned());
        assert_eq!(canonical_unsigned(Some(&v("AQAB"))), Some(vec![1, 0, 1]));
        assert_eq!(canonical_unsigned(Some(&v("AAEAAQ"))), None);
        assert_eq!(canonical_unsigned(Some(&v(""))), None);
        assert_eq!(canonical_unsigned(Some(&v("AQAB="))), None);
        assert_eq!(canonical_unsigned(Some(&Value::Null)), None);
        assert_eq!(canonical_unsigned(None), None);
    }

    #[test]
    fn bit_length_counts_from_the_top_set_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0, 0x01, 0xff]), 9);
    }

    #[test]
    fn problem_descriptions_name_the_policy_values() {
        // `describe` spells the constants out: a `&'static str` cannot format them.
        let exponent = PUBLIC_EXPONENT
            .iter()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
        for (problem, value) in [
            (KeyProblem::ModulusTooSmall, MIN_MODULUS_BITS),
            (KeyProblem::ModulusTooLarge, MAX_MODULUS_BITS),
            (KeyProblem::WrongExponent, exponent as usize),
        ] {
            let text = problem.describe();
            assert!(text.contains(&value.to_string()), "{problem:?}: {text}");
        }
    }

    #[test]
    fn subgroup_membership_matches_brute_force() {
        for prime in [3u32, 5, 7, 11, 13, 17, 97, 353] {
            let mut members = vec![false; prime as usize];
            let mut x = 1u32;
            for _ in 0..prime {
                members[x as usize] = true;
                x = x * (65537 % prime) % prime;
            }
            for residue in 0..prime {
                assert_eq!(
                    in_subgroup_of_65537(residue, prime),
                    members[residue as usize],
                    "{residue} mod {prime}"
                );
            }
        }
    }
}
