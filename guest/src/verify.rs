//! Cognito id token verification: the whole path from the raw string to an
//! [`Identity`], deny by default, one [`Rejection`] per failure class.
//!
//! Steps, in order (the first failure decides):
//! 1. size and presence (`too-large`, `missing`), then structure: three
//!    canonical base64url segments, header and claims UTF-8 JSON objects
//!    without duplicate names (`malformed`);
//! 2. header: `alg` exactly `RS256` (`unsupported-algorithm`), then a
//!    non-empty signature (`malformed`; after `alg` so that `alg: none` is
//!    reported as such), then `crit`/`typ`/`kid` (`bad-header`);
//! 3. key: by exact `kid` from the host's key set, refreshed once when the kid
//!    is unknown (`key-set-unavailable`, `unknown-key`, `unusable-key`);
//! 4. signature (`bad-signature`);
//! 5. claims (`claims::validate`).
//!
//! The token itself is never logged.

use crate::prelude::*;

use crate::capabilities::{Capabilities, Level};
use crate::json;
use crate::jwks::{self, KeyLookup, RsaPublicKey};
use crate::types::{Identity, Rejection, Settings, Verified};
use crate::{claims, rs256, token};

/// Verifies a Cognito id token at `now` (seconds since the epoch).
pub fn verify_token(
    token: &str,
    now: u64,
    settings: &Settings,
    caps: &mut impl Capabilities,
) -> Result<Identity, Rejection> {
    verify_token_full(token, now, settings, caps).map(|verified| verified.identity)
}

/// [`verify_token`], with the token's `exp` and `iat` beside the identity.
pub fn verify_token_full(
    token: &str,
    now: u64,
    settings: &Settings,
    caps: &mut impl Capabilities,
) -> Result<Verified, Rejection> {
    let jws = token::parse(token)?;
    // The claims must be well-formed JSON before any key is fetched.
    let claims = json::parse_object_strict(&jws.payload).map_err(|_| Rejection::Malformed)?;
    authenticate(&jws, caps)?;
    claims::validate_full(&claims, now, settings)
}

/// The `sub` and `iat` of a token verified earlier (a connection's current
/// token), without verifying it again; `None` when it does not parse.
pub fn peek_token(token: &str) -> Option<(String, Option<u64>)> {
    let jws = token::parse(token).ok()?;
    let claims = json::parse_object_strict(&jws.payload).ok()?;
    claims::peek(&claims)
}

/// Runs steps 1 to 4 on a compact JWS whose payload need not be JSON: the
/// signature-level half of [`verify_token`], for callers and tests that check
/// JWS test vectors (whose payloads are raw bytes).
pub fn verify_jws(token: &str, caps: &mut impl Capabilities) -> Result<Vec<u8>, Rejection> {
    let jws = token::parse(token)?;
    authenticate(&jws, caps)?;
    Ok(jws.payload)
}

/// Header, key and signature checks.
fn authenticate(jws: &token::Jws<'_>, caps: &mut impl Capabilities) -> Result<(), Rejection> {
    let kid = token::check_header(&jws.header, &jws.signature)?;
    let key = find_key(kid, caps)?;
    // RS256 via rsa 0.10 + sha2 (not jsonwebtoken: see `rs256`).
    if rs256::verify_pkcs1v15_sha256(&key.n, &key.e, jws.signing_input.as_bytes(), &jws.signature) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

/// Looks `kid` up in the host's key set; asks for a refresh exactly once when
/// the kid is not there (the pool may have rotated its keys).
fn find_key(kid: &str, caps: &mut impl Capabilities) -> Result<RsaPublicKey, Rejection> {
    let mut lookup = lookup_in_key_set(kid, false, caps)?;
    if lookup == KeyLookup::NotFound {
        lookup = lookup_in_key_set(kid, true, caps)?;
    }
    match lookup {
        KeyLookup::Usable(key) => Ok(key),
        KeyLookup::Unusable(problem) => {
            caps.log(
                Level::Warn,
                &format!("token key refused: {}", problem.describe()),
            );
            Err(Rejection::UnusableKey)
        }
        KeyLookup::Ambiguous => {
            caps.log(
                Level::Warn,
                "token kid is listed more than once in the key set",
            );
            Err(Rejection::UnknownKey)
        }
        KeyLookup::NotFound => Err(Rejection::UnknownKey),
    }
}

fn lookup_in_key_set(
    kid: &str,
    refresh: bool,
    caps: &mut impl Capabilities,
) -> Result<KeyLookup, Rejection> {
    let document = caps.key_set(refresh).map_err(|detail| {
        caps.log(Level::Error, &format!("key set unavailable: {detail}"));
        Rejection::KeySetUnavailable
    })?;
    let Some(set) = jwks::parse_key_set(&document) else {
        caps.log(
            Level::Error,
            "key set unavailable: not a JSON object with a keys array",
        );
        return Err(Rejection::KeySetUnavailable);
    };
    Ok(set.lookup(kid))
}
