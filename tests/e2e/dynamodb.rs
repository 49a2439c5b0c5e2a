//! The DynamoDB store over real HTTP: the real binary, the real component,
//! dynalite as the server, and a fault proxy where faults are needed. After
//! each test the table holds exactly the records it should.

use std::collections::BTreeSet;

use gitgazer_ws_tests::fault_proxy::{FaultProxy, PutFault};
use gitgazer_ws_tests::{
    OwnDynalite, create_table, dynalite_endpoint, test_cache_dir, unique_table, unix_now,
};

use crate::support::{Fixture, keys, scan};

const TOO_MANY: &str = "Too many requests. Try again later.";

fn groups(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("g{i:02}")).collect()
}

#[tokio::test]
async fn one_group_thirty_groups_and_duplicates() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("records");
    create_table(&endpoint, &table);
    let f = Fixture::start(&endpoint, &table, &[("DYNAMODB_QUERY_PAGE_LIMIT", "7")]);

    let before = unix_now();
    let token = f.token("alice", &["acme"]).await;
    assert_eq!(f.connect(&token, "c1").await, (200, "Connected.".into()));
    let items = scan(&endpoint, &table).await;
    assert_eq!(items.len(), 1);
    let (integration, connection, sub, expires_at) = items.iter().next().unwrap().clone();
    assert_eq!(
        (integration.as_str(), connection.as_str(), sub.as_str()),
        ("acme", "c1", "alice")
    );
    let ttl = 2 * 3600 + 5 * 60;
    assert!(
        (before + ttl..=unix_now() + ttl).contains(&expires_at),
        "{expires_at}"
    );

    // 30 groups: two BatchWriteItem calls (25 + 5).
    let thirty = groups(30);
    let refs: Vec<&str> = thirty.iter().map(String::as_str).collect();
    let token = f.token("bob", &refs).await;
    assert_eq!(f.connect(&token, "c30").await, (200, "Connected.".into()));

    // Duplicate groups collapse.
    let token = f.token("carol", &["a", "b", "a", "b"]).await;
    assert_eq!(f.connect(&token, "cdup").await, (200, "Connected.".into()));

    let mut expected: BTreeSet<(String, String)> =
        thirty.iter().map(|g| (g.clone(), "c30".into())).collect();
    expected.insert(("acme".into(), "c1".into()));
    expected.insert(("a".into(), "cdup".into()));
    expected.insert(("b".into(), "cdup".into()));
    assert_eq!(keys(&scan(&endpoint, &table).await), expected);

    // 30 records found through the GSI in pages of 7, deleted in 25 + 5.
    assert_eq!(
        f.disconnect("c30").await,
        (200, "Disconnected. Removed 30 records.".into())
    );
    expected.retain(|(_, c)| c != "c30");
    assert_eq!(keys(&scan(&endpoint, &table).await), expected);
    assert_eq!(
        f.disconnect("c30").await,
        (200, "No records to disconnect.".into())
    );

    assert_eq!(
        f.disconnect("c1").await,
        (200, "Disconnected. Removed 1 records.".into())
    );
    assert_eq!(
        f.disconnect("cdup").await,
        (200, "Disconnected. Removed 2 records.".into())
    );
    assert!(scan(&endpoint, &table).await.is_empty());
}

#[tokio::test]
async fn sixty_connections_of_one_user_then_all_disconnected() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("sixty");
    create_table(&endpoint, &table);
    // One item per Query page: every lookup follows LastEvaluatedKey.
    let f = Fixture::start(&endpoint, &table, &[("DYNAMODB_QUERY_PAGE_LIMIT", "1")]);
    let token = f.token("dave", &["acme", "globex"]).await;
    for i in 0..60 {
        assert_eq!(f.connect(&token, &format!("conn-{i}")).await.0, 200);
    }
    assert_eq!(scan(&endpoint, &table).await.len(), 120);
    for i in 0..60 {
        assert_eq!(
            f.disconnect(&format!("conn-{i}")).await,
            (200, "Disconnected. Removed 2 records.".into())
        );
    }
    assert!(scan(&endpoint, &table).await.is_empty());
}

#[tokio::test]
async fn throttling_twice_then_success_stores_everything() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("throttle2");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    let token = f.token("erin", &["acme", "globex"]).await;

    proxy.set(PutFault::Throttle { times: 2 });
    assert_eq!(f.connect(&token, "c1").await, (200, "Connected.".into()));
    assert_eq!(proxy.faults_injected(), 2);
    assert_eq!(
        keys(&scan(&endpoint, &table).await),
        [("acme", "c1"), ("globex", "c1")]
            .iter()
            .map(|(i, c)| (i.to_string(), c.to_string()))
            .collect()
    );
}

#[tokio::test]
async fn persistent_throttling_answers_429_and_rolls_back() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("throttled");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    let thirty = groups(30);
    let refs: Vec<&str> = thirty.iter().map(String::as_str).collect();
    let token = f.token("frank", &refs).await;

    // The first batch (25 records) is written, every later one throttled:
    // the written ones must be removed again.
    proxy.set(PutFault::ThrottleAfter { pass: 1 });
    assert_eq!(f.connect(&token, "c1").await, (429, TOO_MANY.into()));
    assert!(proxy.faults_injected() >= 1);
    assert!(
        scan(&endpoint, &table).await.is_empty(),
        "a 429 left records"
    );

    // Service resumes when the throttling stops.
    proxy.set(PutFault::None);
    assert_eq!(f.connect(&token, "c1").await, (200, "Connected.".into()));
    assert_eq!(scan(&endpoint, &table).await.len(), 30);
}

#[tokio::test]
async fn unprocessed_items_are_resubmitted_to_completion() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("unprocessed");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    let thirty = groups(30);
    let refs: Vec<&str> = thirty.iter().map(String::as_str).collect();
    let token = f.token("grace", &refs).await;

    proxy.set(PutFault::Unprocessed { times: 4 });
    assert_eq!(f.connect(&token, "c1").await, (200, "Connected.".into()));
    assert_eq!(proxy.faults_injected(), 4);
    assert_eq!(scan(&endpoint, &table).await.len(), 30);

    // Unprocessed forever: the retry budget runs out, 429, nothing left.
    proxy.set(PutFault::UnprocessedForever);
    assert_eq!(f.connect(&token, "c2").await, (429, TOO_MANY.into()));
    let left: BTreeSet<String> = scan(&endpoint, &table)
        .await
        .into_iter()
        .map(|(_, c, _, _)| c)
        .collect();
    assert_eq!(left, BTreeSet::from(["c1".to_string()]));
}

#[tokio::test]
async fn a_killed_server_means_500s_never_a_200_without_records_and_service_resumes() {
    let mut dynalite = OwnDynalite::start(test_cache_dir().join(unique_table("killed")));
    let endpoint = dynalite.endpoint();
    let table = unique_table("killed");
    create_table(&endpoint, &table);
    let f = Fixture::start(&endpoint, &table, &[]);
    let token = f.token("heidi", &["acme"]).await;

    assert_eq!(f.connect(&token, "before").await.0, 200);
    dynalite.kill();
    for i in 0..3 {
        let (status, body) = f.connect(&token, &format!("down-{i}")).await;
        assert_eq!((status, body.as_str()), (500, "Internal server error."));
    }
    let (status, _) = f.disconnect("before").await;
    assert_eq!(status, 500);

    dynalite.restart();
    assert_eq!(f.connect(&token, "after").await.0, 200);
    let connections: BTreeSet<String> = scan(&endpoint, &table)
        .await
        .into_iter()
        .map(|(_, c, _, _)| c)
        .collect();
    assert_eq!(
        connections,
        BTreeSet::from(["before".to_string(), "after".to_string()]),
        "exactly the CONNECTs answered 200 have records"
    );
}

#[tokio::test]
async fn a_missing_table_answers_404() {
    let endpoint = dynalite_endpoint();
    let f = Fixture::start(&endpoint, &unique_table("absent"), &[]);
    let token = f.token("ivan", &["acme"]).await;
    assert_eq!(f.connect(&token, "c1").await, (404, "Not found.".into()));
    assert_eq!(f.disconnect("c1").await, (404, "Not found.".into()));
}
