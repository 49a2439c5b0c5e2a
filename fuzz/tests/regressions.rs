//! The fuzz harnesses on known inputs, on stable: every seed and every input
//! kept under `fuzz/regressions/<target>/` (what the fuzzer found, plus
//! hand-picked edge cases) must pass the harness's properties and reach the
//! outcome `fuzz/regressions/expected.json` pins for it, and the seeds must
//! reach the outcomes the targets exist to explore.

use std::collections::BTreeMap;
use std::path::Path;

use gitgazer_ws_fuzz::seeds::{TARGETS, seeds, signed_tokens};
use gitgazer_ws_fuzz::{EventOutcome, KID, event, jwks, key_set, rs256, token};
use gitgazer_ws_guest::Rejection;

/// Runs the target's harness; returns its outcome in words.
fn run(target: &str, bytes: &[u8]) -> String {
    match target {
        "token" => match token(bytes) {
            None => "not UTF-8".into(),
            Some(outcome) => {
                let verdict = match &outcome.verdict {
                    Ok(identity) => format!("valid with {} groups", identity.groups.len()),
                    Err(rejection) => rejection.as_str().to_owned(),
                };
                format!("{verdict}: {}, {} stored", outcome.status, outcome.stored)
            }
        },
        "jwks" => match jwks(bytes) {
            None => "not UTF-8".into(),
            Some(outcome) if !outcome.parsed => "refused".into(),
            Some(outcome) => format!("usable: [{}]", outcome.usable_kids.join(", ")),
        },
        "event" => format!("{:?}", event(bytes)),
        "rs256" => match rs256(bytes) {
            None => "too short".into(),
            Some(true) => "verifies".into(),
            Some(false) => "does not verify".into(),
        },
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn regression_inputs_pass_their_harness_with_their_pinned_outcome() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let expected_path = root.join("expected.json");
    let expected: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
    )
    .expect("expected.json: an object of \"target/file\": \"outcome\"");
    let mut seen = BTreeMap::new();
    for target in TARGETS {
        let dir = root.join(target);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = format!("{target}/{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{name}");
            seen.insert(name, run(target, &bytes));
        }
    }
    let mismatches: Vec<String> = seen
        .iter()
        .filter(|(name, outcome)| expected.get(*name) != Some(outcome))
        .map(|(name, outcome)| format!("{name}: pinned {:?}, got {outcome:?}", expected.get(name)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "outcomes differ from {}:\n{}",
        expected_path.display(),
        mismatches.join("\n")
    );
    let stale: Vec<&String> = expected.keys().filter(|n| !seen.contains_key(*n)).collect();
    assert!(
        stale.is_empty(),
        "pinned inputs that do not exist: {stale:?}"
    );
}

#[test]
fn every_seed_passes_its_harness() {
    for target in TARGETS {
        let seeds = seeds(target);
        assert!(seeds.len() >= 3, "{target}: only {} seeds", seeds.len());
        for seed in seeds {
            eprintln!("{target}: {}", seed.name);
            let _ = run(target, &seed.bytes);
        }
    }
}

#[test]
fn signed_seed_tokens_reach_acceptance_and_each_rejection() {
    let outcomes: Vec<_> = signed_tokens()
        .into_iter()
        .map(|(origin, text)| (origin, token(text.as_bytes()).expect("UTF-8")))
        .collect();
    let by = |origin: &str| &outcomes.iter().find(|(o, _)| *o == origin).unwrap().1;
    assert_eq!(by("valid").status, 200);
    assert_eq!(by("valid").stored, 2);
    assert_eq!(by("many-groups").stored, 30);
    assert_eq!(by("no-groups").status, 401);
    assert_eq!(by("expired").verdict, Err(Rejection::Expired));
    assert_eq!(by("not-yet-valid").verdict, Err(Rejection::NotYetValid));
    assert_eq!(by("wrong-audience").verdict, Err(Rejection::WrongAudience));
    assert_eq!(by("wrong-issuer").verdict, Err(Rejection::WrongIssuer));
    assert_eq!(by("access-token").verdict, Err(Rejection::WrongTokenUse));
    assert_eq!(by("weak-exponent-kid").verdict, Err(Rejection::UnusableKey));
    assert_eq!(by("unknown-kid").verdict, Err(Rejection::UnknownKey));
    // The refresh path: an unknown kid asks once more with the refresh flag;
    // the rotated kid is only in the refreshed set, and valid there.
    assert_eq!(by("valid").key_set_requests, vec![false]);
    assert_eq!(by("unknown-kid").key_set_requests, vec![false, true]);
    assert_eq!(by("rotated-kid").key_set_requests, vec![false, true]);
    assert_eq!(by("rotated-kid").status, 200);
    assert_eq!(by("rotated-kid").stored, 2);
}

#[test]
fn a_token_with_a_flipped_signature_bit_is_refused() {
    let (_, valid) = signed_tokens().swap_remove(0);
    let mut bytes = valid.into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let outcome = token(&bytes).unwrap();
    assert_eq!(outcome.verdict, Err(Rejection::BadSignature));
    assert_eq!(outcome.stored, 0);
}

#[test]
fn the_fixed_key_set_has_exactly_one_usable_key() {
    let outcome = jwks(key_set().as_bytes()).unwrap();
    assert!(outcome.parsed);
    assert_eq!(outcome.usable_kids, vec![KID.to_owned()]);
    let duplicated = key_set().replace("rfc7515-a2-e3", KID);
    assert!(jwks(duplicated.as_bytes()).unwrap().usable_kids.is_empty());
}

#[test]
fn event_fixtures_route_to_connect_and_disconnect() {
    let outcomes: Vec<EventOutcome> = seeds("event").iter().map(|s| event(&s.bytes)).collect();
    assert!(outcomes.contains(&EventOutcome::Connect));
    assert!(outcomes.contains(&EventOutcome::Disconnect));
    assert_eq!(event(b"{"), EventOutcome::Rejected { status: 400 });
}

#[test]
fn rs256_seeds_verify_and_their_flipped_copies_do_not() {
    let seeds = seeds("rs256");
    let verdicts: Vec<(String, bool)> = seeds
        .iter()
        .map(|s| (s.name.clone(), rs256(&s.bytes).expect("long enough")))
        .collect();
    assert!(
        verdicts
            .iter()
            .filter(|(n, _)| !n.starts_with("flipped"))
            .all(|(_, ok)| *ok)
    );
    assert!(
        verdicts
            .iter()
            .filter(|(n, _)| n.starts_with("flipped"))
            .all(|(_, ok)| !ok)
    );
}
