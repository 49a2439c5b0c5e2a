//! Encoding strictness. Every token here carries a signature that is valid
//! over its exact (non-canonical) signing input, so the only thing that can
//! refuse it is the strict parser, never the signature check.

mod common;

use common::*;
use gitgazer_ws_guest::{Rejection, verify_token};

fn verify(token: &str) -> (Result<(), Rejection>, Vec<bool>) {
    let mut host = FakeHost::new();
    let result = verify_token(token, NOW, &settings(), &mut host).map(|_| ());
    (result, host.key_set_calls)
}

fn header_b64() -> String {
    b64(header(KID_A).to_string().as_bytes())
}

fn claims_b64() -> String {
    b64(claims().to_string().as_bytes())
}

/// Signs `h.c` as given, so the signature is valid for the altered text.
fn signed(h: &str, c: &str) -> String {
    sign_input(key_a(), &format!("{h}.{c}"))
}

fn assert_malformed(token: &str, what: &str) {
    let (result, calls) = verify(token);
    assert_eq!(result, Err(Rejection::Malformed), "{what}: {token}");
    assert!(calls.is_empty(), "{what}: key set must not be asked");
}

#[test]
fn the_canonical_form_is_accepted() {
    assert_eq!(verify(&signed(&header_b64(), &claims_b64())).0, Ok(()));
}

/// Pads `text` with `=` to a multiple of four, as standard base64 would.
fn padded(text: &str) -> String {
    let mut text = text.to_owned();
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

#[test]
fn padding_is_refused() {
    // Make sure each segment actually needs padding.
    let mut h = header_b64();
    let mut extra = String::new();
    while h.len().is_multiple_of(4) {
        extra.push(' ');
        h = b64(format!("{{\"alg\":\"RS256\",{extra}\"kid\":\"{KID_A}\"}}").as_bytes());
    }
    let c = claims_b64();
    assert_malformed(&signed(&padded(&h), &c), "padded header");
    let mut c2 = c.clone();
    let mut filler = 0;
    while c2.len().is_multiple_of(4) {
        filler += 1;
        c2 = b64(claims_with(serde_json::json!({ "f": "x".repeat(filler) }))
            .to_string()
            .as_bytes());
    }
    assert_malformed(&signed(&h, &padded(&c2)), "padded claims");
    // Signature segment padded (256 bytes => 342 characters, needs "==").
    let token = signed(&h, &c);
    let signature = token.rsplit('.').next().unwrap();
    assert_eq!(signature.len() % 4, 2);
    assert_malformed(
        &format!("{h}.{c}.{}", padded(signature)),
        "padded signature",
    );
}

#[test]
fn whitespace_is_refused_anywhere() {
    let (h, c) = (header_b64(), claims_b64());
    for ws in [" ", "\t", "\n", "\r\n"] {
        assert_malformed(&signed(&format!("{ws}{h}"), &c), "leading whitespace");
        assert_malformed(&signed(&h, &format!("{c}{ws}")), "trailing whitespace");
        let (left, right) = c.split_at(10);
        assert_malformed(
            &signed(&h, &format!("{left}{ws}{right}")),
            "inner whitespace",
        );
        let token = signed(&h, &c);
        assert_malformed(&format!("{token}{ws}"), "whitespace after the signature");
        assert_malformed(&format!("{ws}{token}"), "whitespace before the token");
    }
}

#[test]
fn foreign_alphabets_are_refused() {
    let (h, c) = (header_b64(), claims_b64());
    // Standard-alphabet characters in place of URL-safe ones.
    let std_h = h.replace('-', "+").replace('_', "/");
    let std_c = c.replace('-', "+").replace('_', "/");
    if std_h != h || std_c != c {
        assert_malformed(&signed(&std_h, &std_c), "standard alphabet");
    }
    assert_malformed(&signed(&format!("{h}+"), &c), "plus sign");
    assert_malformed(&signed(&h, &format!("{c}%3D")), "percent-encoding");
}

/// `text` with its last character changed so that the unused low bits are
/// set: the same bytes, a different (non-canonical) text.
fn with_trailing_bits(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_bits = match text.len() % 4 {
        2 => 4,
        3 => 2,
        _ => panic!("no unused bits in a text of length {}", text.len()),
    };
    let last = *text.as_bytes().last().unwrap();
    let index = ALPHABET.iter().position(|&c| c == last).unwrap();
    let changed = ALPHABET[index | ((1 << unused_bits) - 1)] as char;
    assert_ne!(
        changed as u8, last,
        "the canonical text has zero unused bits"
    );
    format!("{}{changed}", &text[..text.len() - 1])
}

#[test]
fn trailing_bits_are_refused() {
    let mut h = header_b64();
    let mut extra = String::new();
    while h.len().is_multiple_of(4) {
        extra.push(' ');
        h = b64(format!("{{\"alg\":\"RS256\",{extra}\"kid\":\"{KID_A}\"}}").as_bytes());
    }
    let mut c = claims_b64();
    let mut filler = 0;
    while c.len().is_multiple_of(4) {
        filler += 1;
        c = b64(claims_with(serde_json::json!({ "f": "x".repeat(filler) }))
            .to_string()
            .as_bytes());
    }
    assert_eq!(verify(&signed(&h, &c)).0, Ok(()), "baseline");
    assert_malformed(&signed(&with_trailing_bits(&h), &c), "header trailing bits");
    assert_malformed(&signed(&h, &with_trailing_bits(&c)), "claims trailing bits");
    let token = signed(&h, &c);
    let signature = token.rsplit('.').next().unwrap();
    assert_malformed(
        &format!("{h}.{c}.{}", with_trailing_bits(signature)),
        "signature trailing bits",
    );
}

#[test]
fn two_or_four_segments_are_refused() {
    let token = signed(&header_b64(), &claims_b64());
    let parts: Vec<&str> = token.split('.').collect();
    assert_malformed(&parts[..2].join("."), "two segments");
    assert_malformed(&format!("{token}.{}", parts[2]), "four segments");
    assert_malformed(&format!("{token}."), "four segments, last empty");
    assert_malformed(
        &format!("{}.{}.{}.{}", parts[0], parts[1], parts[1], parts[2]),
        "five",
    );
}

#[test]
fn duplicate_members_in_the_header_are_refused() {
    let claims = claims().to_string();
    for header in [
        format!(r#"{{"alg":"RS256","alg":"none","kid":"{KID_A}"}}"#),
        format!(r#"{{"alg":"none","alg":"RS256","kid":"{KID_A}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{KID_A}","kid":"{KID_B}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{KID_A}","\u006bid":"{KID_A}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{KID_A}","x":{{"y":1,"y":2}}}}"#),
    ] {
        assert_malformed(&sign_raw(key_a(), &header, &claims), &header);
    }
}

#[test]
fn duplicate_members_in_the_claims_are_refused() {
    let header = header(KID_A).to_string();
    let good = claims().to_string();
    let body = &good[1..]; // everything after the opening brace
    for prefix in [
        r#"{"sub":"admin","#.to_owned(),
        format!(r#"{{"exp":{},"#, NOW + 999_999),
        r#"{"iss":"https://evil.example","#.to_owned(),
        r#"{"cognito:groups":["admins"],"#.to_owned(),
        r#"{"address":{"a":1,"a":2},"#.to_owned(),
    ] {
        let claims = format!("{prefix}{body}");
        assert_malformed(&sign_raw(key_a(), &header, &claims), &claims);
    }
}

#[test]
fn one_byte_over_16_kib_is_too_large() {
    let token = signed(&header_b64(), &claims_b64());
    let over = format!("{token}{}", "A".repeat(16 * 1024 + 1 - token.len()));
    assert_eq!(over.len(), 16 * 1024 + 1);
    let (result, calls) = verify(&over);
    assert_eq!(result, Err(Rejection::TooLarge));
    assert!(calls.is_empty());
}
