//! The guest's stack (16 KiB, first in linear memory so an overflow traps:
//! guest/build.rs) holds the deepest JSON the policy parses, in both builds:
//! `json::MAX_NESTING` (16) levels of nesting in the claims, which are parsed
//! before the signature is checked (so anyone can send them), and in the key
//! set. Deeper JSON is refused as malformed; nothing traps. (With
//! serde_json's own limit, 127 levels, this test failed on a 32 KiB stack.)

use std::sync::Arc;

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws::keys::StaticKeySet;
use gitgazer_ws::policy::{Capabilities, EngineOptions, GuestBuild, PolicyRuntime, Verdict};
use gitgazer_ws::settings::{DEV_CLIENT_ID, DEV_ISSUER, dev_policy_settings};
use gitgazer_ws::store::MemoryStore;
use gitgazer_ws::wit::types::{Identity, Settings, TokenRejection};
use gitgazer_ws_tests::{hand_made_token, test_cache_dir, unix_now};
use serde_json::{Value, json};

/// The deepest nesting the policy parses, counting the enclosing object.
const DEEPEST: usize = gitgazer_ws_guest::json::MAX_NESTING;

/// `[[...[0]...]]`, `depth` arrays deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

fn caps(jwks: String) -> Capabilities {
    Capabilities {
        store: Arc::new(MemoryStore::new()),
        keys: Arc::new(StaticKeySet::new(jwks, "test").unwrap()),
        socket: None,
    }
}

fn runtimes() -> Vec<(GuestBuild, Arc<PolicyRuntime>)> {
    [GuestBuild::Portable, GuestBuild::Wide]
        .into_iter()
        .map(|build| {
            let runtime = PolicyRuntime::new(EngineOptions {
                guest_build: build,
                cache_dir: Some(test_cache_dir()),
                max_instances: 2,
                ..EngineOptions::default()
            })
            .unwrap();
            (build, runtime)
        })
        .collect()
}

fn claims_with(extra: Value, now: u64) -> Value {
    json!({
        "sub": "deep", "iss": DEV_ISSUER, "aud": DEV_CLIENT_ID, "token_use": "id",
        "iat": now, "exp": now + 600, "cognito:groups": ["acme"], "extra": extra,
    })
}

async fn verdict(
    runtime: &PolicyRuntime,
    caps: &Capabilities,
    token: &str,
    now: u64,
    settings: &Settings,
) -> Verdict {
    runtime
        .verify_token(caps, token, now, settings)
        .await
        .expect("the guest answers instead of trapping")
}

fn invalid(reason: TokenRejection) -> Verdict {
    Err(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_json_the_policy_parses_fits_its_stack() {
    let signer = DevSigner::generate().unwrap();
    let settings = dev_policy_settings();
    let now = unix_now();
    let header = json!({ "alg": "RS256", "kid": signer.kid() }).to_string();
    let caps_plain = caps(signer.jwks().to_owned());

    // The key set, as deep as the guest parses it.
    let mut deep_jwks: Value = serde_json::from_str(signer.jwks()).unwrap();
    deep_jwks["extra"] = nested(DEEPEST - 1);
    let caps_deep = caps(deep_jwks.to_string());

    let deepest = claims_with(nested(DEEPEST - 1), now);
    let too_deep = claims_with(nested(DEEPEST), now);
    let signed_deepest = signer.sign(&deepest);
    let unsigned_deepest = hand_made_token(&header, &deepest.to_string(), &[7; 256]);
    let unsigned_too_deep = hand_made_token(&header, &too_deep.to_string(), &[7; 256]);
    // Far past the limit, still under the 16 KiB token cap.
    let unsigned_far_too_deep = hand_made_token(
        &header,
        &claims_with(nested(4_000), now).to_string(),
        &[7; 256],
    );
    let valid: Verdict = Ok(Identity {
        sub: "deep".into(),
        groups: vec!["acme".into()],
    });

    for (build, runtime) in runtimes() {
        let check = async |caps: &Capabilities, token: &str, expected: &Verdict| {
            let got = verdict(&runtime, caps, token, now, &settings).await;
            assert_eq!(&got, expected, "{build:?}");
        };
        check(&caps_plain, &signed_deepest, &valid).await;
        check(
            &caps_plain,
            &unsigned_deepest,
            &invalid(TokenRejection::BadSignature),
        )
        .await;
        check(
            &caps_plain,
            &unsigned_too_deep,
            &invalid(TokenRejection::Malformed),
        )
        .await;
        check(
            &caps_plain,
            &unsigned_far_too_deep,
            &invalid(TokenRejection::Malformed),
        )
        .await;
        check(&caps_deep, &signed_deepest, &valid).await;
    }
}
