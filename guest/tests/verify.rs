//! One test (at least) per token rejection class, through `verify_token` with
//! an in-memory host and a fixed clock.

mod common;

use common::*;
use gitgazer_ws_guest::{Identity, Level, Rejection, verify_token};
use serde_json::json;

fn verify(token: &str, host: &mut FakeHost) -> Result<Identity, Rejection> {
    verify_token(token, NOW, &settings(), host)
}

fn verify_at(token: &str, now: u64) -> Result<Identity, Rejection> {
    verify_token(token, now, &settings(), &mut FakeHost::new())
}

/// The identity of [`claims`] (and of `claims_with` changes that keep
/// `sub` and the groups): what every accepted token here must give.
fn pool_user() -> Identity {
    Identity {
        sub: "5f3c8a2e-1111-2222-3333-444455556666".into(),
        groups: vec!["integration-1".into(), "integration-2".into()],
    }
}

#[test]
fn valid_token_yields_sub_and_deduplicated_groups() {
    let mut host = FakeHost::new();
    let identity = verify(&valid_token(), &mut host).expect("valid token");
    assert_eq!(identity.sub, "5f3c8a2e-1111-2222-3333-444455556666");
    assert_eq!(identity.groups, vec!["integration-1", "integration-2"]);
    assert_eq!(
        host.key_set_calls,
        vec![false],
        "no refresh for a known kid"
    );
}

#[test]
fn missing_token() {
    let mut host = FakeHost::new();
    assert_eq!(verify("", &mut host), Err(Rejection::Missing));
    assert!(host.key_set_calls.is_empty());
}

#[test]
fn too_large_token_is_refused_before_parsing() {
    let mut host = FakeHost::new();
    // Not even a token: rejected for its size alone.
    assert_eq!(
        verify(&"a".repeat(16 * 1024 + 1), &mut host),
        Err(Rejection::TooLarge)
    );
    assert!(host.key_set_calls.is_empty());
}

/// A validly signed token of exactly `length` bytes (a filler claim and
/// header whitespace are tuned until the length fits).
fn signed_token_of_length(length: usize) -> String {
    for spaces in 0..4 {
        let header_json = format!(
            "{{\"alg\":\"RS256\",{}\"kid\":\"{KID_A}\"}}",
            " ".repeat(spaces)
        );
        // 256-byte signature: 342 characters, plus the two dots.
        for filler in 0..length {
            let claims = claims_with(json!({ "filler": "x".repeat(filler) }));
            let probe_len = b64(header_json.as_bytes()).len()
                + b64(claims.to_string().as_bytes()).len()
                + 2
                + 342;
            if probe_len == length {
                return sign_raw(key_a(), &header_json, &claims.to_string());
            }
            if probe_len > length {
                break;
            }
        }
    }
    panic!("no token of length {length}");
}

#[test]
fn size_limit_is_exactly_16_kib() {
    let at_limit = signed_token_of_length(16 * 1024);
    assert_eq!(at_limit.len(), 16384);
    assert_eq!(verify_at(&at_limit, NOW), Ok(pool_user()));
    let over = signed_token_of_length(16 * 1024 + 2);
    assert_eq!(verify_at(&over, NOW), Err(Rejection::TooLarge));
    let over_by_one = format!("{at_limit}A");
    assert_eq!(verify_at(&over_by_one, NOW), Err(Rejection::TooLarge));
}

#[test]
fn malformed_tokens_never_reach_the_key_set() {
    let good = valid_token();
    let parts: Vec<&str> = good.split('.').collect();
    let (h, c, s) = (parts[0], parts[1], parts[2]);
    let cases = [
        format!("{h}.{c}"),
        format!("{h}.{c}.{s}.{s}"),
        format!("{h}.{c}.{s}."),
        format!(".{c}.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{c}."),
        "..".to_owned(),
        "not a token".to_owned(),
        // Header not JSON / not an object.
        sign_raw(key_a(), "RS256", &claims().to_string()),
        sign_raw(key_a(), "[\"RS256\"]", &claims().to_string()),
        // Claims not JSON / not an object / not UTF-8.
        sign_raw(key_a(), &header(KID_A).to_string(), "claims"),
        sign_raw(key_a(), &header(KID_A).to_string(), "[]"),
        sign_input(
            key_a(),
            &format!(
                "{}.{}",
                b64(header(KID_A).to_string().as_bytes()),
                b64(b"{\"sub\":\"\xff\"}")
            ),
        ),
    ];
    for token in &cases {
        let mut host = FakeHost::new();
        assert_eq!(
            verify(token, &mut host),
            Err(Rejection::Malformed),
            "{token}"
        );
        assert!(host.key_set_calls.is_empty(), "{token}");
    }
}

#[test]
fn unsupported_algorithms() {
    for alg in [
        json!("none"),
        json!("None"),
        json!("HS256"),
        json!("PS256"),
        json!("RS384"),
        json!("RS512"),
        json!("ES256"),
        json!("rs256"),
        json!("RS256\u{0000}"),
        json!(256),
        json!(null),
        json!(["RS256"]),
    ] {
        let token = sign(key_a(), &json!({ "alg": alg, "kid": KID_A }), &claims());
        let mut host = FakeHost::new();
        assert_eq!(
            verify(&token, &mut host),
            Err(Rejection::UnsupportedAlgorithm),
            "{alg}"
        );
        assert!(host.key_set_calls.is_empty());
    }
    let no_alg = sign(key_a(), &json!({ "kid": KID_A }), &claims());
    assert_eq!(
        verify_at(&no_alg, NOW),
        Err(Rejection::UnsupportedAlgorithm)
    );
}

#[test]
fn alg_none_with_empty_signature_is_an_algorithm_rejection() {
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"key-a"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(verify_at(&token, NOW), Err(Rejection::UnsupportedAlgorithm));
}

#[test]
fn bad_headers() {
    for header in [
        json!({ "alg": "RS256" }),
        json!({ "alg": "RS256", "kid": "" }),
        json!({ "alg": "RS256", "kid": 1 }),
        json!({ "alg": "RS256", "kid": null }),
        json!({ "alg": "RS256", "kid": KID_A, "crit": ["exp"] }),
        json!({ "alg": "RS256", "kid": KID_A, "crit": [] }),
        json!({ "alg": "RS256", "kid": KID_A, "typ": 1 }),
        // An embedded key never stands in for a missing kid.
        json!({ "alg": "RS256", "jwk": jwk(key_a(), KID_A) }),
    ] {
        let mut host = FakeHost::new();
        let token = sign(key_a(), &header, &claims());
        assert_eq!(
            verify(&token, &mut host),
            Err(Rejection::BadHeader),
            "{header}"
        );
        assert!(host.key_set_calls.is_empty());
    }
}

#[test]
fn any_typ_string_is_accepted() {
    for typ in ["JWT", "at+jwt", ""] {
        let token = sign(
            key_a(),
            &json!({ "alg": "RS256", "kid": KID_A, "typ": typ }),
            &claims(),
        );
        assert_eq!(verify_at(&token, NOW), Ok(pool_user()), "{typ}");
    }
}

#[test]
fn keys_named_by_the_token_are_ignored() {
    // Signed by key B, which the header offers in every way it can; the
    // kid names the pool's key A, so the signature cannot verify.
    let attacker = jwk(key_b(), KID_A);
    let header = json!({
        "alg": "RS256",
        "kid": KID_A,
        "jwk": attacker,
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    });
    let token = sign(key_b(), &header, &claims());
    let mut host = FakeHost::new();
    assert_eq!(verify(&token, &mut host), Err(Rejection::BadSignature));
    assert_eq!(host.key_set_calls, vec![false]);
}

#[test]
fn unknown_kid_asks_for_one_refresh_then_gives_up() {
    let token = sign(key_b(), &header(KID_B), &claims());
    let mut host = FakeHost::new();
    assert_eq!(verify(&token, &mut host), Err(Rejection::UnknownKey));
    assert_eq!(host.key_set_calls, vec![false, true]);
}

#[test]
fn unknown_kid_found_after_refresh_is_used() {
    let token = sign(key_b(), &header(KID_B), &claims());
    let rotated = key_set(&[jwk(key_a(), KID_A), jwk(key_b(), KID_B)]);
    let mut host = FakeHost::with_refresh(Ok(pool_key_set()), Ok(rotated));
    assert_eq!(verify(&token, &mut host), Ok(pool_user()));
    assert_eq!(host.key_set_calls, vec![false, true]);
}

#[test]
fn kid_listed_twice_matches_nothing() {
    let set = key_set(&[jwk(key_a(), KID_A), jwk(key_a(), KID_A)]);
    let mut host = FakeHost::with_key_set(Ok(set));
    assert_eq!(
        verify(&valid_token(), &mut host),
        Err(Rejection::UnknownKey)
    );
    // Ambiguity is not staleness: no refresh.
    assert_eq!(host.key_set_calls, vec![false]);
    assert!(host.logged_at(Level::Warn, "more than once"));
}

#[test]
fn kid_matching_is_exact() {
    for kid in ["KEY-A", "key-a ", " key-a", "key-"] {
        let token = sign(key_a(), &header(kid), &claims());
        assert_eq!(
            verify_at(&token, NOW),
            Err(Rejection::UnknownKey),
            "{kid:?}"
        );
    }
}

#[test]
fn key_set_unavailable() {
    let cases: Vec<(&str, FakeHost, Vec<bool>)> = vec![
        (
            "error",
            FakeHost::with_key_set(Err("fetch failed: 503".into())),
            vec![false],
        ),
        (
            "not json",
            FakeHost::with_key_set(Ok("<html>".into())),
            vec![false],
        ),
        (
            "no keys",
            FakeHost::with_key_set(Ok("{\"kys\":[]}".into())),
            vec![false],
        ),
        (
            "keys not array",
            FakeHost::with_key_set(Ok("{\"keys\":{}}".into())),
            vec![false],
        ),
        (
            "refresh error",
            FakeHost::with_refresh(Ok(key_set(&[])), Err("cool-down".into())),
            vec![false, true],
        ),
    ];
    for (name, mut host, calls) in cases {
        assert_eq!(
            verify(&valid_token(), &mut host),
            Err(Rejection::KeySetUnavailable),
            "{name}"
        );
        assert_eq!(host.key_set_calls, calls, "{name}");
        assert!(host.logs.iter().any(|(l, _)| *l == Level::Error), "{name}");
    }
    let mut host = FakeHost::with_key_set(Err("fetch failed: 503".into()));
    let _ = verify(&valid_token(), &mut host);
    assert!(
        host.logged("fetch failed: 503"),
        "the host's detail is logged"
    );
}

/// Key set with key A's JWK altered by `change` (null removes a member).
fn pool_with_changed_key(change: serde_json::Value) -> String {
    let mut key = jwk(key_a(), KID_A);
    let object = key.as_object_mut().unwrap();
    for (name, value) in change.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    key_set(&[key])
}

#[test]
fn unusable_keys() {
    let n = modulus(key_a());
    let mut with_zero = vec![0u8];
    with_zero.extend_from_slice(&n);
    let too_big = {
        let mut big = vec![0xffu8; 1025]; // 8200 bits, odd
        big[0] = 0xc1;
        big
    };
    let small = {
        let mut small = n[..128].to_vec(); // 1024 bits
        small[127] |= 1;
        small
    };
    let n_b64 = b64(&n);
    for change in [
        json!({ "kty": "EC" }),
        json!({ "kty": "rsa" }),
        json!({ "kty": null }),
        json!({ "use": "enc" }),
        json!({ "use": 1 }),
        json!({ "alg": "RS512" }),
        json!({ "alg": "PS256" }),
        json!({ "key_ops": ["sign"] }),
        json!({ "key_ops": "verify" }),
        json!({ "e": "Aw" }),     // 3
        json!({ "e": "AQ" }),     // 1
        json!({ "e": "AQAD" }),   // 65539
        json!({ "e": "AAEAAQ" }), // 65537 with a leading zero octet
        json!({ "e": "AQAB=" }),
        json!({ "e": null }),
        json!({ "n": b64(&with_zero) }),
        json!({ "n": format!("{n_b64}=") }),
        json!({ "n": format!(" {n_b64}") }),
        json!({ "n": format!("+{}", &n_b64[1..]) }), // not the URL-safe alphabet
        json!({ "n": null }),
        json!({ "n": b64(&small) }),
        json!({ "n": b64(&too_big) }),
    ] {
        let mut host = FakeHost::with_key_set(Ok(pool_with_changed_key(change.clone())));
        assert_eq!(
            verify(&valid_token(), &mut host),
            Err(Rejection::UnusableKey),
            "{change}"
        );
        assert_eq!(host.key_set_calls, vec![false], "{change}");
        assert!(host.logged_at(Level::Warn, "token key refused"), "{change}");
    }
}

#[test]
fn optional_key_members_that_allow_rs256_are_fine() {
    for change in [
        json!({ "use": null }),
        json!({ "alg": null }),
        json!({ "key_ops": ["verify"] }),
        json!({ "key_ops": ["sign", "verify"] }),
        json!({ "x5c": ["ignored"], "x5t": "ignored" }),
    ] {
        let mut host = FakeHost::with_key_set(Ok(pool_with_changed_key(change.clone())));
        assert_eq!(
            verify(&valid_token(), &mut host),
            Ok(pool_user()),
            "{change}"
        );
    }
}

#[test]
fn malformed_keys_do_not_poison_the_others() {
    let set = format!(
        "{{\"keys\":[1,null,\"x\",{{\"kid\":\"other\",\"kty\":\"RSA\",\"n\":\"=\"}},\
         {{\"kid\":\"dup\",\"kid\":\"dup\"}},{}]}}",
        jwk(key_a(), KID_A)
    );
    let mut host = FakeHost::with_key_set(Ok(set.clone()));
    assert_eq!(verify(&valid_token(), &mut host), Ok(pool_user()));
    // But a token naming a malformed key is refused.
    for kid in ["other", "dup"] {
        let token = sign(key_a(), &header(kid), &claims());
        let mut host = FakeHost::with_key_set(Ok(set.clone()));
        assert_eq!(
            verify(&token, &mut host),
            Err(Rejection::UnusableKey),
            "{kid}"
        );
    }
}

#[test]
fn bad_signatures() {
    let good = valid_token();
    let parts: Vec<&str> = good.split('.').collect();
    let (h, c, s) = (parts[0], parts[1], parts[2]);
    let mut signature = b64_decode(s);

    // Signed by another key.
    let by_b = sign(key_b(), &header(KID_A), &claims());
    // Claims swapped after signing.
    let other_claims = b64(claims_with(json!({ "sub": "admin" }))
        .to_string()
        .as_bytes());
    let swapped = format!("{h}.{other_claims}.{s}");
    // Signature bit flipped.
    let last = signature.len() - 1;
    signature[last] ^= 1;
    let flipped = format!("{h}.{c}.{}", b64(&signature));
    signature[last] ^= 1;
    // Signature one octet short / one leading zero too long.
    let short = format!("{h}.{c}.{}", b64(&signature[1..]));
    let mut padded = vec![0u8];
    padded.extend_from_slice(&signature);
    let long = format!("{h}.{c}.{}", b64(&padded));
    // The signature of an expired token is still checked first.
    let wrong_issuer_bad_sig = sign(
        key_b(),
        &header(KID_A),
        &claims_with(json!({ "iss": "x", "exp": 1 })),
    );

    for token in [by_b, swapped, flipped, short, long, wrong_issuer_bad_sig] {
        assert_eq!(
            verify_at(&token, NOW),
            Err(Rejection::BadSignature),
            "{token}"
        );
    }
}

#[test]
fn wrong_issuer() {
    for iss in [
        json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"),
        json!(format!("{ISSUER}/")),
        json!(null),
    ] {
        let token = sign(key_a(), &header(KID_A), &claims_with(json!({ "iss": iss })));
        assert_eq!(verify_at(&token, NOW), Err(Rejection::WrongIssuer), "{iss}");
    }
}

#[test]
fn wrong_audience() {
    for aud in [
        json!("other-client"),
        json!([AUDIENCE]),
        json!([AUDIENCE, "x"]),
        json!(null),
    ] {
        let token = sign(key_a(), &header(KID_A), &claims_with(json!({ "aud": aud })));
        assert_eq!(
            verify_at(&token, NOW),
            Err(Rejection::WrongAudience),
            "{aud}"
        );
    }
}

#[test]
fn wrong_token_use() {
    for token_use in [json!("access"), json!("ID"), json!(null)] {
        let token = sign(
            key_a(),
            &header(KID_A),
            &claims_with(json!({ "token_use": token_use })),
        );
        assert_eq!(
            verify_at(&token, NOW),
            Err(Rejection::WrongTokenUse),
            "{token_use}"
        );
    }
}

#[test]
fn expired_at_exp_plus_leeway() {
    let exp = NOW + 10;
    let token = sign(key_a(), &header(KID_A), &claims_with(json!({ "exp": exp })));
    let leeway = u64::from(LEEWAY);
    assert_eq!(verify_at(&token, exp + leeway - 1), Ok(pool_user()));
    assert_eq!(verify_at(&token, exp + leeway), Err(Rejection::Expired));
    assert_eq!(verify_at(&token, exp + 86_400), Err(Rejection::Expired));
}

#[test]
fn not_yet_valid_past_now_plus_leeway() {
    let leeway = u64::from(LEEWAY);
    for claim in ["nbf", "iat"] {
        let at_edge = sign(
            key_a(),
            &header(KID_A),
            &claims_with(json!({ claim: NOW + leeway })),
        );
        assert_eq!(verify_at(&at_edge, NOW), Ok(pool_user()), "{claim}");
        let future = sign(
            key_a(),
            &header(KID_A),
            &claims_with(json!({ claim: NOW + leeway + 1 })),
        );
        assert_eq!(
            verify_at(&future, NOW),
            Err(Rejection::NotYetValid),
            "{claim}"
        );
    }
}

#[test]
fn bad_claims() {
    for change in [
        json!({ "exp": null }),
        json!({ "exp": "1795770854" }),
        json!({ "exp": -1 }),
        json!({ "iat": "now" }),
        json!({ "nbf": false }),
        json!({ "auth_time": [] }),
        json!({ "sub": null }),
        json!({ "sub": "" }),
        json!({ "sub": 42 }),
        json!({ "jti": 1 }),
        json!({ "scope": ["openid"] }),
        json!({ "token_use": 1 }),
        json!({ "iss": 1 }),
        json!({ "aud": 1 }),
        // Type errors are reported before a wrong issuer.
        json!({ "iss": "https://evil.example", "sub": 1 }),
    ] {
        let token = sign(key_a(), &header(KID_A), &claims_with(change.clone()));
        assert_eq!(
            verify_at(&token, NOW),
            Err(Rejection::BadClaims),
            "{change}"
        );
    }
}

#[test]
fn fractional_and_integer_dates_are_both_accepted() {
    let token = sign(
        key_a(),
        &header(KID_A),
        &claims_with(json!({ "exp": (NOW + 100) as f64 + 0.5, "iat": (NOW - 1) as f64 })),
    );
    assert_eq!(verify_at(&token, NOW), Ok(pool_user()));
}

#[test]
fn groups_that_cannot_be_read_count_as_none() {
    for groups in [
        json!(null),
        json!("integration-1"),
        json!(["a", 1]),
        json!(["a", ""]),
        json!([]),
    ] {
        let token = sign(
            key_a(),
            &header(KID_A),
            &claims_with(json!({ "cognito:groups": groups })),
        );
        let identity = verify_at(&token, NOW).expect("still a valid token");
        assert!(identity.groups.is_empty(), "{groups}");
    }
}
