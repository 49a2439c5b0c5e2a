//! Load under store faults (ignored by default; run it with
//! `scripts/load-faults`, see the README's Reliability section).
//!
//! Many concurrent clients drive CONNECT/DISCONNECT pairs over HTTP through
//! the real binary in DynamoDB mode, against a dynalite of the test's own
//! behind the fault proxy, while a fault schedule runs: throttling bursts,
//! `UnprocessedItems`, dynalite paused (SIGSTOP) and resumed, unreachable
//! while it is killed and restarted. Afterwards the table is compared with what the clients were
//! told:
//! - CONNECT 200, later DISCONNECT 200: no record left;
//! - CONNECT 200, no DISCONNECT: exactly its records (one per group, its sub);
//! - CONNECT not 200: no record at all.
//!
//! DISCONNECTs that failed during a fault are sent again once the store is
//! healthy (as a client would), and the host's background rollbacks are
//! awaited (`GET /status`) before the comparison. Prints requests, failures
//! by status, records checked and the host's peak RSS.
//!
//! Knobs: `LOAD_CLIENTS` (default 48), `LOAD_SECONDS` (default 60).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitgazer_ws_tests::fault_proxy::{FaultProxy, PutFault};
use gitgazer_ws_tests::{OwnDynalite, create_table, test_cache_dir, unique_table};

use crate::support::{Fixture, scan};

/// Integrations (Cognito groups) the clients belong to.
const INTEGRATIONS: usize = 40;
/// Peak RSS the host must stay under during the run.
const MAX_PEAK_RSS_MIB: u64 = 256;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// What one connection's client was told.
#[derive(Debug, Clone)]
struct Outcome {
    sub: String,
    groups: Vec<String>,
    connect: u16,
    /// `None`: the client stays connected.
    disconnect: Option<u16>,
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, Outcome>,
    statuses: BTreeMap<(&'static str, u16), u64>,
}

impl Tally {
    fn count(&mut self, operation: &'static str, status: u16) {
        *self.statuses.entry((operation, status)).or_default() += 1;
    }
}

/// A token per group set, minted once: sub `user-N`, 1 to 30 groups (two
/// BatchWriteItem chunks above 25).
async fn tokens(fixture: &Fixture) -> Vec<(String, Vec<String>, String)> {
    let mut tokens = Vec::new();
    for user in 0..24 {
        let count = match user % 4 {
            0 => 1,
            1 => 3,
            2 => 12,
            _ => 30,
        };
        let groups: Vec<String> = (0..count)
            .map(|i| format!("integration-{:02}", (user * 7 + i) % INTEGRATIONS))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let sub = format!("user-{user}");
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let token = fixture.token(&sub, &refs).await;
        tokens.push((sub, groups, token));
    }
    tokens
}

/// Runs the fault schedule until `until`, one phase after another.
async fn inject_faults(
    proxy: &FaultProxy,
    dynalite: &Mutex<OwnDynalite>,
    until: Instant,
) -> Vec<&'static str> {
    let mut phases = Vec::new();
    let schedule: [&'static str; 6] = ["throttle", "calm", "unprocessed", "pause", "calm", "kill"];
    let phase = Duration::from_secs(4);
    for name in schedule.iter().cycle() {
        if Instant::now() + phase > until {
            break;
        }
        phases.push(*name);
        match *name {
            "throttle" => {
                // Bursts longer than the SDK's retries: some CONNECTs get 429.
                for _ in 0..4 {
                    proxy.set(PutFault::Throttle { times: 12 });
                    tokio::time::sleep(phase / 4).await;
                }
                proxy.set(PutFault::None);
            }
            "unprocessed" => {
                proxy.set(PutFault::Unprocessed { times: 400 });
                tokio::time::sleep(phase).await;
                proxy.set(PutFault::None);
            }
            "pause" => {
                dynalite.lock().unwrap().pause();
                tokio::time::sleep(phase).await;
                dynalite.lock().unwrap().resume();
            }
            "kill" => {
                // The store goes away, is killed and restarted on the same
                // data, then comes back. Traffic stops first: dynalite writes
                // a GSI entry and its item in two LevelDB writes, so a SIGKILL
                // between them tears an item from its index, which real
                // DynamoDB never does.
                proxy.set_down(true);
                proxy.wait_idle(Duration::from_secs(15)).await;
                dynalite.lock().unwrap().kill();
                tokio::time::sleep(phase / 2).await;
                // `restart` blocks until dynalite answers again.
                tokio::task::block_in_place(|| dynalite.lock().unwrap().restart());
                proxy.set_down(false);
            }
            _ => tokio::time::sleep(phase).await,
        }
    }
    proxy.set(PutFault::None);
    phases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "load test (about a minute): run with scripts/load-faults"]
async fn load_with_store_faults_loses_nothing_and_orphans_nothing() {
    let clients = env_number("LOAD_CLIENTS", 48);
    let seconds = env_number("LOAD_SECONDS", 60);

    let table = unique_table("load");
    let dynalite = OwnDynalite::start(test_cache_dir().join(&table));
    let direct = dynalite.endpoint();
    create_table(&direct, &table);
    let proxy = FaultProxy::start(&direct).await;
    let fixture = Fixture::start(&proxy.endpoint, &table, &[]);
    let tokens = Arc::new(tokens(&fixture).await);
    let fixture = Arc::new(fixture);
    let dynalite = Arc::new(Mutex::new(dynalite));
    let tally = Arc::new(Mutex::new(Tally::default()));

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for client in 0..clients {
        let (fixture, tokens, tally) = (fixture.clone(), tokens.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let connection_id = format!("c{client}-{n}");
                let (sub, groups, token) = &tokens[fastrand::usize(..tokens.len())];
                let (connect, _) = fixture.connect(token, &connection_id).await;
                // One in five stays connected; the rest disconnect.
                let disconnect = if connect == 200 && fastrand::u8(..5) != 0 {
                    Some(fixture.disconnect(&connection_id).await.0)
                } else {
                    None
                };
                let mut tally = tally.lock().unwrap();
                tally.count("CONNECT", connect);
                if let Some(status) = disconnect {
                    tally.count("DISCONNECT", status);
                }
                tally.outcomes.insert(
                    connection_id,
                    Outcome {
                        sub: sub.clone(),
                        groups: groups.clone(),
                        connect,
                        disconnect,
                    },
                );
            }
        }));
    }
    let phases = inject_faults(&proxy, &dynalite, until).await;
    for worker in workers {
        worker.await.expect("client task");
    }
    let load_time = started.elapsed();

    // The store is healthy again: DISCONNECTs that failed are sent again.
    let mut retried = 0;
    let failed: Vec<String> = {
        let tally = tally.lock().unwrap();
        tally
            .outcomes
            .iter()
            .filter(|(_, o)| o.disconnect.is_some_and(|s| s != 200))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for connection_id in failed {
        let mut status = 0;
        for _ in 0..10 {
            status = fixture.disconnect(&connection_id).await.0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            status, 200,
            "DISCONNECT {connection_id} still failing after the faults"
        );
        retried += 1;
        let mut tally = tally.lock().unwrap();
        tally.count("DISCONNECT retried", status);
        tally.outcomes.get_mut(&connection_id).unwrap().disconnect = Some(200);
    }

    // Wait for the host's background rollbacks (and their confirmations).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = crate::support::get(&fixture.server.management("/status")).await;
        assert_eq!(status, 200);
        let pending = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pendingRollbacks"]
            .as_u64()
            .expect("pendingRollbacks");
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} rollbacks still pending"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let stored = scan(&direct, &table).await;
    let tally = tally.lock().unwrap();
    let mut expected = BTreeSet::new();
    for (connection_id, outcome) in &tally.outcomes {
        if outcome.connect == 200 && outcome.disconnect.is_none() {
            for group in &outcome.groups {
                expected.insert((group.clone(), connection_id.clone(), outcome.sub.clone()));
            }
        }
    }
    let actual: BTreeSet<(String, String, String)> = stored
        .iter()
        .map(|(group, connection, sub, _)| (group.clone(), connection.clone(), sub.clone()))
        .collect();
    let peak_rss_mib = fixture.server.peak_rss_kib() / 1024;

    let requests: u64 = tally.statuses.values().sum();
    println!(
        "load with store faults: {clients} clients, {:.1} s, phases {phases:?}",
        load_time.as_secs_f64()
    );
    println!(
        "  requests: {requests} ({} connections)",
        tally.outcomes.len()
    );
    for ((operation, status), count) in &tally.statuses {
        println!("  {operation} {status}: {count}");
    }
    println!(
        "  faults injected by the proxy: {}",
        proxy.faults_injected()
    );
    println!("  DISCONNECTs sent again after the faults: {retried}");
    println!(
        "  records checked: {} expected, {} stored",
        expected.len(),
        actual.len()
    );
    println!("  host peak RSS: {peak_rss_mib} MiB");

    let lost: BTreeSet<&String> = expected.difference(&actual).map(|(_, c, _)| c).collect();
    let orphaned: BTreeSet<&String> = actual.difference(&expected).map(|(_, c, _)| c).collect();
    if !lost.is_empty() || !orphaned.is_empty() {
        // Keep the host's log for the post-mortem.
        let log = test_cache_dir().join(format!("{table}-host.log"));
        std::fs::write(&log, fixture.server.logs()).unwrap();
        let describe = |ids: &BTreeSet<&String>| {
            ids.iter()
                .take(10)
                .map(|id| format!("{id}: {:?}", tally.outcomes.get(*id)))
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        panic!(
            "{} connection(s) lost records:\n  {}\n{} connection(s) left orphans:\n  {}\nhost log: {}",
            lost.len(),
            describe(&lost),
            orphaned.len(),
            describe(&orphaned),
            log.display()
        );
    }

    // The run must have exercised what it claims to.
    let connects_ok = tally.statuses.get(&("CONNECT", 200)).copied().unwrap_or(0);
    let connects_failed: u64 = tally
        .statuses
        .iter()
        .filter(|((op, status), _)| *op == "CONNECT" && *status != 200)
        .map(|(_, n)| n)
        .sum();
    assert!(connects_ok > 100, "only {connects_ok} CONNECTs succeeded");
    assert!(
        connects_failed > 0,
        "no CONNECT failed: the faults did not bite"
    );
    assert!(proxy.faults_injected() > 0);
    assert!(!expected.is_empty(), "no connection stayed connected");
    assert!(
        peak_rss_mib < MAX_PEAK_RSS_MIB,
        "host peak RSS {peak_rss_mib} MiB (bound {MAX_PEAK_RSS_MIB} MiB)"
    );
}
