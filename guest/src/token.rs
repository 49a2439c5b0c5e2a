//! Strict parsing of a compact JWS (RFC 7515 §7.1) and of its header.
//!
//! Everything here runs before any key is touched, so a malformed token never
//! makes the guest ask the host for a key set, let alone a refresh.

use crate::prelude::*;

use crate::base64url;
use crate::json::{self, Object, Value};
use crate::types::Rejection;

/// Tokens longer than this are refused before any parsing (16 KiB). Cognito
/// id tokens are a few KiB even with many groups.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compact JWS whose three segments decoded canonically and whose header
/// is a JSON object without duplicate member names.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    /// The protected header.
    pub header: Object,
    /// The payload bytes (for a JWT, the claims set).
    pub payload: Vec<u8>,
    /// `header_b64 + "." + payload_b64`: exactly what was signed.
    pub signing_input: &'a str,
    /// The signature bytes (possibly empty: see [`parse`]).
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Refuses `too-large` (over
/// [`MAX_TOKEN_BYTES`], before anything else), `missing` (empty), and `malformed` (not three canonical
/// base64url segments, or a header that is not a UTF-8 JSON object or repeats
/// a member name).
///
/// An empty signature is allowed through here and refused as `malformed` by
/// [`check_header`] after the `alg` check, so that an `alg: none`
/// token (empty signature by definition) is reported as the algorithm attack
/// it is.
pub fn parse(token: &str) -> Result<Jws<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLarge);
    }
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Rejection::Malformed);
    };
    let header_bytes = base64url::decode(header_b64).ok_or(Rejection::Malformed)?;
    let payload = base64url::decode(payload_b64).ok_or(Rejection::Malformed)?;
    let signature = base64url::decode(signature_b64).ok_or(Rejection::Malformed)?;
    let header = json::parse_object_strict(&header_bytes).map_err(|_| Rejection::Malformed)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Jws {
        header,
        payload,
        signing_input,
        signature,
    })
}

/// Checks the header of an RS256 token and returns its `kid`.
///
/// - `alg` must be exactly the string `RS256`, else `unsupported-algorithm`
///   (checked first: a `none` or `HS256` token is refused as such).
/// - Then the signature must be non-empty, else `malformed`.
/// - `crit` must be absent: no extension is understood, else `bad-header`.
/// - `kid` must be a non-empty string, else `bad-header`.
/// - `typ`, when present, must be a string (any value), else `bad-header`.
/// - `jku`, `x5u`, `jwk` and `x5c` are ignored: keys come only from the host.
pub fn check_header<'h>(header: &'h Object, signature: &[u8]) -> Result<&'h str, Rejection> {
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(Rejection::UnsupportedAlgorithm);
    }
    if signature.is_empty() {
        return Err(Rejection::Malformed);
    }
    if header.get("crit").is_some() {
        return Err(Rejection::BadHeader);
    }
    if let Some(typ) = header.get("typ")
        && typ.as_str().is_none()
    {
        return Err(Rejection::BadHeader);
    }
    match header.get("kid").and_then(Value::as_str) {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(Rejection::BadHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn header(json: &str) -> Object {
        json::parse_object_strict(json.as_bytes()).unwrap()
    }

    #[test]
    fn parse_keeps_the_exact_signing_input() {
        let token = format!("{}.{}.{}", b64(b"{}"), b64(b"{\"a\":1}"), b64(b"sig"));
        let jws = parse(&token).unwrap();
        assert_eq!(
            jws.signing_input,
            format!("{}.{}", b64(b"{}"), b64(b"{\"a\":1}"))
        );
        assert_eq!(jws.payload, b"{\"a\":1}");
        assert_eq!(jws.signature, b"sig");
    }

    #[test]
    fn too_large_wins_over_everything_else() {
        assert_eq!(
            parse(&"!".repeat(MAX_TOKEN_BYTES + 1)).err(),
            Some(Rejection::TooLarge)
        );
        assert_eq!(
            parse(&"!".repeat(MAX_TOKEN_BYTES)).err(),
            Some(Rejection::Malformed)
        );
        assert_eq!(parse("").err(), Some(Rejection::Missing));
    }

    #[test]
    fn header_rules() {
        let ok = header(r#"{"alg":"RS256","kid":"k","typ":"JWT","jku":"https://x","x5c":[]}"#);
        assert_eq!(check_header(&ok, b"s"), Ok("k"));
        assert_eq!(check_header(&ok, b""), Err(Rejection::Malformed));
        let none = header(r#"{"alg":"none"}"#);
        assert_eq!(
            check_header(&none, b""),
            Err(Rejection::UnsupportedAlgorithm)
        );
        for (json, expected) in [
            (r#"{"kid":"k"}"#, Rejection::UnsupportedAlgorithm),
            (
                r#"{"alg":"none","kid":"k"}"#,
                Rejection::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":"rs256","kid":"k"}"#,
                Rejection::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":["RS256"],"kid":"k"}"#,
                Rejection::UnsupportedAlgorithm,
            ),
            (
                r#"{"alg":"RS256 ","kid":"k"}"#,
                Rejection::UnsupportedAlgorithm,
            ),
            (r#"{"alg":"RS256"}"#, Rejection::BadHeader),
            (r#"{"alg":"RS256","kid":""}"#, Rejection::BadHeader),
            (r#"{"alg":"RS256","kid":7}"#, Rejection::BadHeader),
            (
                r#"{"alg":"RS256","kid":"k","crit":[]}"#,
                Rejection::BadHeader,
            ),
            (
                r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#,
                Rejection::BadHeader,
            ),
            (r#"{"alg":"RS256","kid":"k","typ":1}"#, Rejection::BadHeader),
            (
                r#"{"alg":"RS256","kid":"k","typ":null}"#,
                Rejection::BadHeader,
            ),
        ] {
            assert_eq!(check_header(&header(json), b"s"), Err(expected), "{json}");
        }
    }
}
