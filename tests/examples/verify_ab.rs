//! A/B comparison of guest builds on one verification, for changes to the
//! guest's arithmetic on a noisy machine: criterion runs one build after the
//! other, minutes apart, and this machine's neighbours move a row by up to
//! 30 % in that time. Here the builds take turns, batch after batch, in one
//! process, and the report gives each build's fastest and median batch.
//!
//! ```sh
//! cargo run --release -p gitgazer-ws-tests --example verify_ab -- \
//!     old.wasm new.wasm            # components (.wasm) of the ws-handler world
//! cargo run --release -p gitgazer-ws-tests --example verify_ab   # the embedded builds
//! ```
//!
//! `VERIFY_AB_ONLY=<text>` runs only the contestants whose name contains
//! the text, without timing (to profile one, e.g. under `perf record`).
//!
//! Per build it times, each on a fresh instance as in the server (200 calls a
//! batch, 40 batches):
//! - a valid dev token;
//! - the same token with its signature one byte short: the same token path
//!   (parsing, claims, key set, key policy) up to the signature check, which
//!   refuses it before any arithmetic;
//! - an empty token (instance + call, refused before any work);
//! - a whole CONNECT decision with the embedded store.
//!
//! It prints, against native `rsa` 0.10 (SHA-256 and the signature check on
//! a key parsed once), the in-guest RS256 check (valid − short signature:
//! the same work as the native row, plus the key's conversion to limbs and
//! into Montgomery form, which `rsa` precomputes, and the claims check and
//! identity that follow a good signature) and the whole in-guest
//! token path (valid − empty); and the instance overhead (empty) against a
//! CONNECT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gitgazer_ws::clock::unix_now;
use gitgazer_ws::dev::{DevClaims, DevSigner};
use gitgazer_ws::keys::StaticKeySet;
use gitgazer_ws::policy::{EngineOptions, GuestBuild, PolicyRuntime};
use gitgazer_ws::service::Handler;
use gitgazer_ws::settings::dev_policy_settings;
use gitgazer_ws::store::MemoryStore;
use sha2::{Digest, Sha256};

const BATCH: u32 = 200;
const BATCHES: usize = 40;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let signer = DevSigner::generate().expect("dev key");
    let now = unix_now();
    let token = signer.mint(
        &DevClaims {
            sub: "ab-user".into(),
            groups: vec!["integration-1".into()],
            ttl_seconds: 3600,
        },
        now,
    );
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWT");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    // The same token with a signature one byte short: refused as
    // `bad-signature` by the length check, after everything but the RS256
    // arithmetic and hashing.
    let short_signature = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature[..signature.len() - 1])
    );
    let candidates: Vec<(String, EngineOptions)> = {
        let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
        if paths.is_empty() {
            [GuestBuild::Portable, GuestBuild::Wide]
                .into_iter()
                .map(|guest_build| {
                    let options = EngineOptions {
                        guest_build,
                        ..EngineOptions::default()
                    };
                    (format!("embedded {guest_build:?}"), options)
                })
                .collect()
        } else {
            paths
                .into_iter()
                .map(|path| {
                    let options = EngineOptions {
                        component: Some(path.clone()),
                        cache_dir: None,
                        ..EngineOptions::default()
                    };
                    (path.display().to_string(), options)
                })
                .collect()
        }
    };
    let handlers = candidates
        .into_iter()
        .map(|(name, options)| {
            let handler = runtime.block_on(async {
                let policy = PolicyRuntime::new(options).expect("policy runtime");
                let keys =
                    Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "ab").expect("key set"));
                let settings = dev_policy_settings();
                Handler::new(policy, Arc::new(MemoryStore::new()), keys, settings)
            });
            (name, handler)
        })
        .collect::<Vec<_>>();

    // Contestants: the reference (native `rsa` 0.10 on the same token), then
    // per build the valid token, the short signature, the empty one and a
    // CONNECT (see the top of the file).
    let reference = signer.public_key();
    let mut contestants: Vec<(String, Box<dyn Fn() + '_>)> = vec![(
        "native rsa 0.10".into(),
        Box::new(|| {
            let digest = Sha256::digest(signing_input.as_bytes());
            reference
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
                .expect("the signature verifies natively");
        }),
    )];
    for (name, handler) in &handlers {
        let (runtime, token) = (&runtime, &token);
        // Pushed in this order per build: the report below relies on it.
        for (kind, input, expected) in [
            ("valid", token.as_str(), None),
            (
                "short signature",
                short_signature.as_str(),
                Some("bad-signature"),
            ),
            ("empty", "", Some("missing")),
        ] {
            contestants.push((
                format!("{kind}, {name}"),
                Box::new(move || {
                    let verdict = runtime
                        .block_on(handler.verify_token(input, now))
                        .expect("verification ran");
                    let refused = match &verdict {
                        Ok(_) => None,
                        Err(rejection) => Some(rejection.name()),
                    };
                    assert_eq!(
                        refused, expected,
                        "{name}: unexpected verdict on the {kind} token: {verdict:?}"
                    );
                }),
            ));
        }
        contestants.push((
            format!("connect, {name}"),
            Box::new(move || {
                // The same connection again: its records are overwritten.
                let reply = runtime.block_on(handler.connect("ab", "ab-connection", Some(token)));
                assert_eq!(reply.status, 200, "{name}: CONNECT refused");
            }),
        ));
    }

    // VERIFY_AB_ONLY=<text>: time only the contestants whose name contains it
    // (for profiling one of them).
    if let Ok(only) = std::env::var("VERIFY_AB_ONLY") {
        contestants.retain(|(name, _)| name.contains(&only));
        if contestants.is_empty() {
            eprintln!("VERIFY_AB_ONLY={only}: no contestant's name contains it");
            std::process::exit(2);
        }
        for (name, run) in &contestants {
            for _ in 0..BATCH * BATCHES as u32 * 20 {
                run();
            }
            println!("ran {name} {} times", BATCH * BATCHES as u32 * 20);
        }
        return;
    }
    let mut batches: Vec<Vec<Duration>> = vec![Vec::new(); contestants.len()];
    for round in 0..=BATCHES {
        for (index, (_, run)) in contestants.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..BATCH {
                run();
            }
            // Round 0 warms up (first touch of each pool slot).
            if round > 0 {
                batches[index].push(start.elapsed() / BATCH);
            }
        }
    }
    let fastest: Vec<Duration> = batches
        .iter_mut()
        .map(|times| {
            times.sort();
            times[0]
        })
        .collect();
    println!("{:>10} {:>10}  per call", "fastest", "median");
    for ((name, _), times) in contestants.iter().zip(&batches) {
        println!(
            "{:>10.1?} {:>10.1?}  {name}",
            times[0],
            times[times.len() / 2]
        );
    }
    println!(
        "\nagainst native rsa 0.10 (fastest batches): the in-guest RS256 check (valid − short \
         signature) and the whole in-guest token path (valid − empty); instance + call \
         overhead (empty) against a whole CONNECT:"
    );
    let native = fastest[0].as_secs_f64();
    for (index, (name, _)) in handlers.iter().enumerate() {
        let [valid, short, empty, connect] = [1, 2, 3, 4].map(|offset| fastest[4 * index + offset]);
        let rs256 = valid.saturating_sub(short);
        let token_path = valid.saturating_sub(empty);
        println!(
            "RS256 {:>8.1?} {:>5.2}×   token path {:>8.1?} {:>5.2}×   overhead {:>5.1} %  {name}",
            rs256,
            rs256.as_secs_f64() / native,
            token_path,
            token_path.as_secs_f64() / native,
            100.0 * empty.as_secs_f64() / connect.as_secs_f64()
        );
    }
}
