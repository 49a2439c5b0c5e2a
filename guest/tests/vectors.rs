//! Public test vectors, read in place from `shared/testdata` (the tests fail,
//! never skip, when it is missing): Wycheproof RSA PKCS#1 v1.5 signatures and
//! JWS/JWK sets, and the RFC 7515/7519/7520/7517 examples.

mod common;

use common::*;
use gitgazer_ws_guest::jwks::{self, KeyProblem};
use gitgazer_ws_guest::montgomery::{limb32, limb64};
use gitgazer_ws_guest::rs256::{ModPow, verify_pkcs1v15_sha256, verify_with};
use gitgazer_ws_guest::verify::verify_jws;
use gitgazer_ws_guest::{Rejection, verify_token};
use serde_json::Value;

fn str_of<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector member {name} missing"))
}

/// Verifies with the 32-bit-limb arithmetic (the portable wasm guest's) and
/// the 64-bit one (native, and the wide-arithmetic guest's); they must agree.
fn verify_both_widths(n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let widths: [(&str, ModPow); 2] = [("32-bit", limb32::mod_pow), ("64-bit", limb64::mod_pow)];
    let [narrow, wide] = widths.map(|(_, mod_pow)| verify_with(mod_pow, n, e, message, signature));
    assert_eq!(narrow, wide, "the limb widths disagree");
    assert_eq!(wide, verify_pkcs1v15_sha256(n, e, message, signature));
    wide
}

#[derive(Debug, Default)]
struct Tally {
    valid: usize,
    rejected: usize,
    failures: Vec<String>,
}

/// Runs one Wycheproof `rsassa_pkcs1_verify` file through the primitive.
/// `sha256`: whether the file's hash is SHA-256. For other hashes nothing may
/// verify, except a vector that is in fact a SHA-256 signature over its
/// message (Wycheproof's "hashed with SHA-256 instead of SHA-384/512" cases):
/// those are genuine RS256 signatures and must verify.
fn run_pkcs1_file(file: &str, sha256: bool) -> Tally {
    let doc = load_json(&format!("wycheproof/{file}"));
    let mut tally = Tally::default();
    let mut seen = 0;
    for group in doc["testGroups"].as_array().expect("testGroups") {
        let n = hex(str_of(&group["publicKey"], "modulus"));
        let e = hex(str_of(&group["publicKey"], "publicExponent"));
        for test in group["tests"].as_array().expect("tests") {
            seen += 1;
            let result = str_of(test, "result");
            let accepted =
                verify_both_widths(&n, &e, &hex(str_of(test, "msg")), &hex(str_of(test, "sig")));
            // `acceptable` (DigestInfo without NULL) is refused: strict.
            let is_sha256_signature = test["comment"]
                .as_str()
                .is_some_and(|c| c.contains("hashed with SHA-256 instead"));
            let expected = if sha256 {
                result == "valid"
            } else {
                is_sha256_signature
            };
            if accepted != expected {
                tally.failures.push(format!(
                    "{file} tcId {} ({result}, {}): accepted={accepted}",
                    test["tcId"], test["comment"]
                ));
            }
            if accepted {
                tally.valid += 1;
            } else {
                tally.rejected += 1;
            }
        }
    }
    assert_eq!(
        seen,
        doc["numberOfTests"].as_u64().unwrap() as usize,
        "{file}: every test was run"
    );
    tally
}

#[test]
fn wycheproof_rsa_pkcs1_sha256() {
    let mut total = 0;
    let mut valid = 0;
    for (file, expect_valid, expect_total) in [
        ("rsa_signature_2048_sha256_test.json", 9, 259),
        ("rsa_signature_3072_sha256_test.json", 8, 259),
        ("rsa_signature_4096_sha256_test.json", 7, 258),
    ] {
        let tally = run_pkcs1_file(file, true);
        assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
        assert_eq!(tally.valid, expect_valid, "{file}");
        assert_eq!(tally.valid + tally.rejected, expect_total, "{file}");
        total += tally.valid + tally.rejected;
        valid += tally.valid;
    }
    assert_eq!((total, valid), (776, 24));
}

#[test]
fn wycheproof_rsa_pkcs1_sha256_8192_from_the_flattened_file() {
    // The 8192-bit file exists only in flattened form; 8192 bits is the
    // largest modulus the key policy admits, so it is worth running.
    let doc = load_json("wycheproof/derived/wycheproof_rsa_pkcs1_sha256_flat.json");
    let mut checked = 0;
    let mut valid = 0;
    let mut failures = Vec::new();
    for test in doc["tests"].as_array().unwrap() {
        if str_of(test, "source_file") != "rsa_signature_8192_sha256_test.json" {
            continue;
        }
        checked += 1;
        let accepted = verify_both_widths(
            &hex(str_of(test, "n_hex")),
            &hex(str_of(test, "e_hex")),
            &hex(str_of(test, "msg_hex")),
            &hex(str_of(test, "sig_hex")),
        );
        if accepted {
            valid += 1;
        }
        if accepted != (str_of(test, "result") == "valid") {
            failures.push(format!("tcId {}: accepted={accepted}", test["tcId"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!((checked, valid), (258, 7));
}

#[test]
fn wycheproof_other_hashes_never_verify_as_sha256() {
    let mut total = 0;
    let mut accepted = 0;
    for file in [
        "rsa_signature_2048_sha384_test.json",
        "rsa_signature_2048_sha512_test.json",
    ] {
        let tally = run_pkcs1_file(file, false);
        assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
        total += tally.valid + tally.rejected;
        accepted += tally.valid;
    }
    assert_eq!(total, 258 + 259);
    // Only the two vectors that really are SHA-256 signatures (tcId 221 of
    // each file); none of the 15 valid SHA-384/512 signatures.
    assert_eq!(accepted, 2);
}

/// A host whose key set is `set` (a JWKS) or `{"keys":[set]}` (a JWK).
fn host_for(key: &Value) -> FakeHost {
    let set = if key.get("keys").is_some() {
        key.to_string()
    } else {
        serde_json::json!({ "keys": [key] }).to_string()
    };
    FakeHost::with_key_set(Ok(set))
}

#[test]
fn wycheproof_jws_and_jwk_rsa_vectors() {
    let flat = load_json("wycheproof/derived/wycheproof_jws_rsa_flat.json");
    // The flattened file must agree with the originals it was derived from.
    let mut originals = std::collections::HashMap::new();
    for file in ["json_web_signature_test.json", "json_web_key_test.json"] {
        let doc = load_json(&format!("wycheproof/{file}"));
        for group in doc["testGroups"].as_array().unwrap() {
            for test in group["tests"].as_array().unwrap() {
                originals.insert(
                    (file.to_owned(), test["tcId"].as_u64().unwrap()),
                    str_of(test, "jws").to_owned(),
                );
            }
        }
    }

    let mut passed_rs256 = 0;
    let mut refused = 0;
    let mut failures = Vec::new();
    for test in flat["tests"].as_array().unwrap() {
        let file = str_of(test, "source_file");
        let tc_id = test["tcId"].as_u64().unwrap();
        let jws = str_of(test, "jws");
        if let Some(original) = originals.get(&(file.to_owned(), tc_id)) {
            assert_eq!(
                original, jws,
                "{file} tcId {tc_id} differs from the original"
            );
        }
        let expect_pass = str_of(test, "result") == "valid" && test["header_alg"] == "RS256";
        let mut host = host_for(&test["public_key"]);
        let got = verify_jws(jws, &mut host);
        match (&got, expect_pass) {
            (Ok(_), true) => passed_rs256 += 1,
            (Err(_), false) => refused += 1,
            _ => failures.push(format!(
                "{file} tcId {tc_id} {} ({}): {got:?}",
                test["group_comment"], test["comment"]
            )),
        }
        // Key-level negatives must be refused by the key policy itself.
        if file == "json_web_key_test.json" && !expect_pass {
            assert_eq!(got, Err(Rejection::UnusableKey), "{file} tcId {tc_id}");
        }
        if test["group_comment"] == "rsa_encryption" {
            assert_eq!(got, Err(Rejection::UnusableKey), "{file} tcId {tc_id}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(passed_rs256, 10, "valid RS256 vectors that pass");
    assert_eq!(
        passed_rs256 + refused,
        flat["count"].as_u64().unwrap() as usize
    );
    assert!(refused > 300);
}

#[test]
fn wycheproof_roca_key_is_refused_by_policy_though_its_signature_is_valid() {
    let flat = load_json("wycheproof/derived/wycheproof_jws_rsa_flat.json");
    let roca: Vec<&Value> = flat["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| str_of(t, "group_comment") == "jws_rsa_roca_key")
        .collect();
    assert_eq!(roca.len(), 2);
    for test in roca {
        let key = &test["public_key"];
        let key = if key.get("keys").is_some() {
            &key["keys"][0]
        } else {
            key
        };
        let n = b64_decode(str_of(key, "n"));
        let e = b64_decode(str_of(key, "e"));
        let parts: Vec<&str> = str_of(test, "jws").split('.').collect();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        assert!(verify_pkcs1v15_sha256(
            &n,
            &e,
            signing_input.as_bytes(),
            &b64_decode(parts[2])
        ));
        assert!(jwks::has_roca_fingerprint(&n));
        let object =
            gitgazer_ws_guest::json::parse_object_strict(key.to_string().as_bytes()).unwrap();
        assert_eq!(
            jwks::check_key_policy(&object),
            Err(KeyProblem::RocaVulnerable)
        );
    }
}

#[test]
fn generated_and_rfc_keys_have_no_roca_fingerprint() {
    assert!(!jwks::has_roca_fingerprint(&modulus(key_a())));
    assert!(!jwks::has_roca_fingerprint(&modulus(key_b())));
    for file in [
        "rfc/rfc7515_A2_rs256.json",
        "rfc/rfc7520_4_1_rs256.json",
        "rfc/rfc7517_A1_rsa_jwk_rfc7638_thumbprint.json",
    ] {
        let doc = load_json(file);
        assert!(
            !jwks::has_roca_fingerprint(&b64_decode(str_of(&doc["public_jwk"], "n"))),
            "{file}"
        );
    }
}

#[test]
fn rfc7515_a2_signature_is_valid_but_not_a_cognito_token() {
    let doc = load_json("rfc/rfc7515_A2_rs256.json");
    let key = &doc["public_jwk"];
    let (n, e) = (b64_decode(str_of(key, "n")), b64_decode(str_of(key, "e")));
    let signing_input = str_of(&doc, "signing_input");
    let signature = b64_decode(str_of(&doc, "signature_b64url"));
    assert!(verify_pkcs1v15_sha256(
        &n,
        &e,
        signing_input.as_bytes(),
        &signature
    ));
    assert_eq!(
        str_of(&doc, "compact"),
        format!("{signing_input}.{}", str_of(&doc, "signature_b64url"))
    );
    // The key itself meets the policy.
    let object = gitgazer_ws_guest::json::parse_object_strict(key.to_string().as_bytes()).unwrap();
    assert!(jwks::check_key_policy(&object).is_ok());

    // As a Cognito token: no kid, whatever the clock says.
    let mut settings = settings();
    settings.issuer = "joe".into();
    for now in [1_300_819_000, NOW] {
        let mut host = host_for(key);
        let got = verify_token(str_of(&doc, "compact"), now, &settings, &mut host);
        assert_eq!(got, Err(Rejection::BadHeader));
        assert!(host.key_set_calls.is_empty());
    }

    let variants = doc["negative_variants"].as_array().unwrap();
    assert_eq!(variants.len(), 3);
    for variant in variants {
        let compact = str_of(variant, "compact");
        let parts: Vec<&str> = compact.split('.').collect();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        assert!(!verify_pkcs1v15_sha256(
            &n,
            &e,
            signing_input.as_bytes(),
            &b64_decode(parts[2])
        ));
        let got = verify_token(compact, 1_300_819_000, &settings, &mut host_for(key));
        assert!(got.is_err(), "{}", variant["name"]);
    }
}

#[test]
fn rfc7520_4_1_signature_is_valid_but_the_payload_is_no_jwt() {
    let doc = load_json("rfc/rfc7520_4_1_rs256.json");
    let key = &doc["public_jwk"];
    let (n, e) = (b64_decode(str_of(key, "n")), b64_decode(str_of(key, "e")));
    let signing_input = str_of(&doc, "signing_input");
    let signature = b64_decode(str_of(&doc, "signature_b64url"));
    assert!(verify_pkcs1v15_sha256(
        &n,
        &e,
        signing_input.as_bytes(),
        &signature
    ));

    // Through the key set and the whole signature path: accepted as a JWS.
    let compact = str_of(&doc, "compact");
    let mut host = host_for(&doc["jwks"]);
    let payload = verify_jws(compact, &mut host).expect("valid RS256 JWS");
    assert_eq!(payload, str_of(&doc, "payload_utf8").as_bytes());
    assert_eq!(host.key_set_calls, vec![false]);

    // The cookbook copy agrees.
    let cookbook = load_json("rfc/ietf-jose-cookbook/jws/4_1.rsa_v15_signature.json");
    assert_eq!(str_of(&cookbook["output"], "compact"), compact);

    // As a Cognito token: the payload is not a JSON object.
    let mut host = host_for(&doc["jwks"]);
    assert_eq!(
        verify_token(compact, NOW, &settings(), &mut host),
        Err(Rejection::Malformed)
    );
    assert!(host.key_set_calls.is_empty());

    // JSON serializations are not compact tokens.
    for form in ["flattened_json", "general_json"] {
        let text = doc[form].to_string();
        assert_eq!(
            verify_token(&text, NOW, &settings(), &mut host_for(&doc["jwks"])),
            Err(Rejection::Malformed),
            "{form}"
        );
    }

    let variants = doc["negative_variants"].as_array().unwrap();
    let mut host = host_for(&doc["jwks"]);
    assert_eq!(
        verify_jws(str_of(&variants[0], "compact"), &mut host),
        Err(Rejection::BadSignature)
    );
    let mut host = host_for(&doc["jwks"]);
    assert_eq!(
        verify_jws(str_of(&variants[1], "compact"), &mut host),
        Err(Rejection::UnknownKey)
    );
    assert_eq!(host.key_set_calls, vec![false, true]);
}

#[test]
fn rfc7519_hs256_and_unsecured_jwts_are_unsupported_algorithms() {
    let doc = load_json("rfc/rfc7519_hs256_and_unsecured_negative.json");
    for example in ["hs256_example", "unsecured_example"] {
        let compact = str_of(&doc[example], "compact");
        // Even with the HMAC key offered as a JWK in the key set.
        let mut host = host_for(&doc["hs256_example"]["oct_jwk"]);
        assert_eq!(
            verify_token(compact, 1_300_819_000, &settings(), &mut host),
            Err(Rejection::UnsupportedAlgorithm),
            "{example}"
        );
        assert!(host.key_set_calls.is_empty());
    }
}

#[test]
fn rfc_and_cookbook_keys_meet_or_break_the_policy_as_expected() {
    let policy = |key: &Value| {
        let object =
            gitgazer_ws_guest::json::parse_object_strict(key.to_string().as_bytes()).unwrap();
        jwks::check_key_policy(&object)
    };
    let rfc7517 = load_json("rfc/rfc7517_A1_rsa_jwk_rfc7638_thumbprint.json");
    let key = policy(&rfc7517["public_jwk"]).expect("RFC 7517 A.1 key is usable");
    assert_eq!(key.e, vec![1, 0, 1]);
    assert_eq!(key.n.len() * 8, 2048);
    for (file, expected) in [
        ("jwk/3_3.rsa_public_key.json", None),
        ("jwk/3_4.rsa_private_key.json", None),
        ("jwk/3_1.ec_public_key.json", Some(KeyProblem::NotRsa)),
        (
            "jwk/3_5.symmetric_key_mac_computation.json",
            Some(KeyProblem::NotRsa),
        ),
        (
            "jwk/3_6.symmetric_key_encryption.json",
            Some(KeyProblem::NotRsa),
        ),
    ] {
        let key = load_json(&format!("rfc/ietf-jose-cookbook/{file}"));
        assert_eq!(policy(&key).err(), expected, "{file}");
    }
}
