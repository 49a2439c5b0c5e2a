//! RS256 verification natively and inside the guest, on the same dev token,
//! and the per-request cost around it. `cargo bench -p gitgazer-ws --bench
//! verify`; figures and the machine are in BENCHMARKS.md.
//!
//! - `rs256/*`: the signature check alone (SHA-256 of the signing input
//!   included), natively: the `rsa` crate (the reference) and the guest's
//!   hand-written arithmetic in both limb widths.
//! - `guest/verify-token valid, <build>`: a fresh instance, the whole token
//!   path and the signature check inside wasm, in the portable and the
//!   wide-arithmetic build; `, no deadline`: the same without epoch checks
//!   (what the guest time budget costs). `guest/verify-token empty`: the same
//!   call refused before any work, i.e. instantiation + call overhead. Their
//!   difference is the in-guest cost of the whole token path.
//! - `guest/verify-token short signature, <build>`: the valid token with its
//!   signature one byte short, refused by the length check after everything
//!   but the RS256 arithmetic and hashing. `valid` minus this row is the
//!   in-guest RS256 check, the work of `rs256/native rsa 0.10` (plus the
//!   per-key setup `rsa` precomputes, and the claims check and identity that
//!   follow a good signature).
//! - `guest/verify-token unknown key, <build>`: the token path without the
//!   signature check (parsing, key set twice: the refetch on an unknown kid).
//! - `guest/connect`, `guest/connect+disconnect`: the decisions end to end
//!   in-process with the embedded store, default build.
//! - `instance memory/*`: the same verification under each way of preparing
//!   a guest's linear memory (the pooling allocator's options).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use gitgazer_ws::clock::unix_now;
use gitgazer_ws::dev::{DevClaims, DevSigner};
use gitgazer_ws::keys::StaticKeySet;
use gitgazer_ws::policy::{EngineOptions, GuestBuild, PolicyRuntime};
use gitgazer_ws::service::Handler;
use gitgazer_ws::settings::dev_policy_settings;
use gitgazer_ws::store::MemoryStore;
use gitgazer_ws::wit::types::TokenRejection;
use gitgazer_ws_guest::montgomery::{limb32, limb64};
use gitgazer_ws_guest::rs256::verify_with;
use sha2::{Digest, Sha256};

fn key_part(jwks: &serde_json::Value, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwks["keys"][0][name].as_str().unwrap())
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let signer = DevSigner::generate().unwrap();
    let now = unix_now();
    let token = signer.mint(
        &DevClaims {
            sub: "bench-user".into(),
            groups: vec!["integration-1".into(), "integration-2".into()],
            ttl_seconds: 3600,
        },
        now,
    );
    let jwks: serde_json::Value = serde_json::from_str(signer.jwks()).unwrap();
    let (n, e) = (key_part(&jwks, "n"), key_part(&jwks, "e"));
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();

    let mut group = c.benchmark_group("rs256");
    let reference = signer.public_key();
    group.bench_function("native rsa 0.10", |b| {
        b.iter(|| {
            let digest = Sha256::digest(signing_input.as_bytes());
            assert!(
                reference
                    .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
                    .is_ok()
            );
        })
    });
    for (name, mod_pow) in [
        (
            "native hand-written, 64-bit limbs",
            limb64::mod_pow as fn(&[u8], &[u8], &[u8]) -> Vec<u8>,
        ),
        ("native hand-written, 32-bit limbs", limb32::mod_pow),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                assert!(verify_with(
                    mod_pow,
                    &n,
                    &e,
                    signing_input.as_bytes(),
                    &signature
                ))
            })
        });
    }
    group.finish();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handler_with = |options: EngineOptions| {
        runtime.block_on(async {
            let policy = PolicyRuntime::new(options).unwrap();
            let keys = Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "bench").unwrap());
            let settings = dev_policy_settings();
            Handler::new(policy, Arc::new(MemoryStore::new()), keys, settings)
        })
    };
    let handler = |guest_build, enforce_guest_time_budget| {
        handler_with(EngineOptions {
            guest_build,
            enforce_guest_time_budget,
            ..EngineOptions::default()
        })
    };
    let mut group = c.benchmark_group("guest");
    for (build, name) in [
        (GuestBuild::Portable, "portable"),
        (GuestBuild::Wide, "wide"),
    ] {
        for (deadline, suffix) in [(true, ""), (false, ", no deadline")] {
            let handler = handler(build, deadline);
            group.bench_function(format!("verify-token valid, {name}{suffix}"), |b| {
                b.iter(|| {
                    let verdict = runtime.block_on(handler.verify_token(&token, now)).unwrap();
                    assert!(verdict.is_ok());
                })
            });
            if deadline {
                let (header, rest) = token.split_once('.').unwrap();
                let header: serde_json::Value =
                    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
                let mut header = header.clone();
                header["kid"] = "nope".into();
                let unknown = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
                group.bench_function(format!("verify-token unknown key, {name}"), |b| {
                    b.iter(|| {
                        runtime
                            .block_on(handler.verify_token(&unknown, now))
                            .unwrap()
                    })
                });
                let short_signature = {
                    let (signing_input, signature) = token.rsplit_once('.').unwrap();
                    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
                    signature.pop();
                    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
                };
                group.bench_function(format!("verify-token short signature, {name}"), |b| {
                    b.iter(|| {
                        let verdict = runtime
                            .block_on(handler.verify_token(&short_signature, now))
                            .unwrap();
                        assert!(matches!(verdict, Err(TokenRejection::BadSignature)));
                    })
                });
                group.bench_function(format!("verify-token empty, {name}"), |b| {
                    b.iter(|| runtime.block_on(handler.verify_token("", now)).unwrap())
                });
            }
        }
    }
    let handler = handler(GuestBuild::Auto, true);
    group.bench_function("connect", |b| {
        // The same connection again: its records are overwritten.
        b.iter(|| {
            let connect =
                runtime.block_on(handler.connect("bench", "bench-connection", Some(&token)));
            assert_eq!(connect.status, 200);
        })
    });
    group.bench_function("connect+disconnect", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let connect = handler
                    .connect("bench", "bench-connection", Some(&token))
                    .await;
                assert_eq!(connect.status, 200);
                let disconnect = handler.disconnect("bench", "bench-connection").await;
                assert_eq!(disconnect.status, 200);
            })
        })
    });
    group.finish();

    // How a guest's linear memory is made ready for the next request; the
    // default is the last row.
    let mut group = c.benchmark_group("instance memory");
    let pooling = |keep_resident_bytes, pagemap_scan| EngineOptions {
        keep_resident_bytes,
        pagemap_scan,
        ..EngineOptions::default()
    };
    for (name, options) in [
        (
            "on-demand allocation",
            EngineOptions {
                pooling: false,
                ..EngineOptions::default()
            },
        ),
        ("pooling, nothing kept resident", pooling(0, false)),
        ("pooling, 4 MiB + page scan", pooling(4 << 20, true)),
        ("pooling, 4 MiB kept resident", pooling(4 << 20, false)),
    ] {
        let handler = handler_with(options);
        group.bench_function(format!("verify-token valid, {name}"), |b| {
            b.iter(|| {
                let verdict = runtime.block_on(handler.verify_token(&token, now)).unwrap();
                assert!(verdict.is_ok());
            })
        });
    }
    group.finish();
}

criterion_group!(verify, benches);
criterion_main!(verify);
