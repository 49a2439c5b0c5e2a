//! The DynamoDB store over real HTTP: the real binary, the real component,
//! dynalite as the server, and a fault proxy where faults are needed. After
//! each test the table holds exactly the records it should.

use std::collections::BTreeSet;

use gitgazer_ws_tests::fault_proxy::{FaultProxy, Operation, PutFault};
use gitgazer_ws_tests::{
    OwnDynalite, create_table, dynalite_endpoint, test_cache_dir, unique_table, unix_now,
};

use crate::support::{Fixture, client, get, keys, scan, scan_items};

const TOO_MANY: &str = "Too many requests. Try again later.";

/// `pendingRollbacks` of the host's `GET /status`.
async fn pending_rollbacks(f: &Fixture) -> u64 {
    let (status, body) = get(&f.server.management("/status")).await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    value["pendingRollbacks"]
        .as_u64()
        .expect("pendingRollbacks")
}

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

/// "A failure leaves none" when the cleanup fails too: the store stops
/// answering (paused) just as a CONNECT's write fails, so its rollback
/// cannot delete what the first batch wrote. The CONNECT still answers its
/// error, `/status` counts the keys left to remove, and once the store
/// answers again the background retrier removes them: pending 0, table
/// empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_fails_while_the_store_is_paused_completes_in_the_background() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("paused-rollback");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    let thirty = groups(30);
    let refs: Vec<&str> = thirty.iter().map(String::as_str).collect();
    let token = f.token("grace", &refs).await;
    assert_eq!(pending_rollbacks(&f).await, 0);

    // 25 records written, the second batch throttled, every delete held:
    // the rollback times out (the SDK's 8 s) and goes to the background.
    proxy.set(PutFault::ThrottleAfter { pass: 1 });
    proxy.pause_deletes(true);
    assert_eq!(f.connect(&token, "c1").await, (429, TOO_MANY.into()));
    assert!(proxy.deletes_held() >= 1, "the rollback reached the store");
    assert_eq!(
        scan(&endpoint, &table).await.len(),
        25,
        "the rollback failed"
    );
    assert_eq!(
        pending_rollbacks(&f).await,
        30,
        "every key of the failed CONNECT is pending"
    );

    proxy.set(PutFault::None);
    proxy.pause_deletes(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pending = pending_rollbacks(&f).await;
        if pending == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} keys still pending a minute after the store resumed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        scan(&endpoint, &table).await.is_empty(),
        "the failed CONNECT left records"
    );
}

/// DISCONNECTs that arrive while a delete is under way wait for it and
/// then share a BatchWriteItem (BENCHMARKS.md: a call costs about the same
/// CPU for one item as for 25); each still answers for its own records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disconnects_share_delete_calls() {
    const CONNECTIONS: u32 = 40;
    let endpoint = dynalite_endpoint();
    let table = unique_table("shared-deletes");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = std::sync::Arc::new(Fixture::start(&proxy.endpoint, &table, &[]));
    let token = f.token("dora", &["a", "b", "c"]).await;
    for i in 0..CONNECTIONS {
        assert_eq!(f.connect(&token, &format!("c{i}")).await.0, 200);
    }
    assert_eq!(
        scan(&endpoint, &table).await.len(),
        3 * CONNECTIONS as usize
    );
    let batches_before = proxy.requests("BatchWriteItem");

    let answers: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.disconnect(&format!("c{i}")).await })
        })
        .collect();
    for answer in answers {
        assert_eq!(
            answer.await.unwrap(),
            (200, "Disconnected. Removed 3 records.".into())
        );
    }
    assert!(scan(&endpoint, &table).await.is_empty());
    let calls = proxy.requests("BatchWriteItem") - batches_before;
    println!("{CONNECTIONS} concurrent DISCONNECTs: {calls} delete calls");
    assert!(
        calls < CONNECTIONS,
        "{calls} delete calls for {CONNECTIONS} concurrent DISCONNECTs: none shared"
    );
}

/// A CONNECT reads its user's revocation with a BatchGetItem (shared by
/// concurrent CONNECTs); a role without `dynamodb:BatchGetItem` is told
/// once in the log and each read becomes a Query. A revocation holds
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_read_with_batch_get_item_or_a_query_without_the_permission() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let endpoint = dynalite_endpoint();
    let table = unique_table("revocation-reads");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    // Mallory's tokens issued up to a minute from now are revoked.
    client(&endpoint)
        .put_item()
        .table_name(&table)
        .item("integrationId", AttributeValue::S("revoked mallory".into()))
        .item("connectionId", AttributeValue::S("revoked mallory".into()))
        .item(
            "revokedBefore",
            AttributeValue::N((unix_now() + 60).to_string()),
        )
        .item(
            "expiresAt",
            AttributeValue::N((unix_now() + 600).to_string()),
        )
        .send()
        .await
        .unwrap();
    let erin = f.token("erin", &["a"]).await;
    let mallory = f.token("mallory", &["a"]).await;
    let revoked = (401, "Unauthorized: Access revoked".to_owned());

    assert_eq!(f.connect(&erin, "e1").await.0, 200);
    assert_eq!(f.connect(&mallory, "m1").await, revoked);
    assert_eq!(proxy.requests("BatchGetItem"), 2);
    assert_eq!(proxy.requests("Query"), 0, "a revocation read was a Query");

    proxy.deny_batch_get(true);
    assert_eq!(f.connect(&erin, "e2").await.0, 200);
    assert_eq!(f.connect(&mallory, "m2").await, revoked);
    assert_eq!(f.connect(&erin, "e3").await.0, 200);
    assert_eq!(
        proxy.requests("BatchGetItem"),
        3,
        "asked again after the refusal"
    );
    assert_eq!(proxy.requests("Query"), 3, "one Query per CONNECT");
    let stored: BTreeSet<String> = scan_items(&endpoint, &table)
        .await
        .iter()
        .filter_map(|item| item["connectionId"].as_s().ok().cloned())
        .collect();
    let expected = ["e1", "e2", "e3", "revoked mallory"].map(String::from);
    assert_eq!(stored, BTreeSet::from(expected));
    let log = f.server.logs();
    assert_eq!(
        log.matches("dynamodb:BatchGetItem is not allowed").count(),
        1,
        "{log}"
    );
}

/// The store's error classes through the binary, on the operations a
/// DISCONNECT makes: a Query on an index the table lacks is DynamoDB's
/// validation error (400), throttling on the Query or on the delete that
/// follows it is 429; the records stay until a DISCONNECT succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_errors_map_a_wrong_index_to_400_and_throttling_to_429() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("disconnect-errors");
    create_table(&endpoint, &table);

    let wrong_index = Fixture::start(
        &endpoint,
        &table,
        &[(
            "DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX",
            "no-such-index",
        )],
    );
    let token = wrong_index.token("heidi", &["acme"]).await;
    assert_eq!(
        wrong_index.connect(&token, "c1").await,
        (200, "Connected.".into())
    );
    assert_eq!(
        wrong_index.disconnect("c1").await,
        (400, "Bad request.".into())
    );
    drop(wrong_index);

    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    proxy.throttle(Operation::Query, true);
    assert_eq!(f.disconnect("c1").await, (429, TOO_MANY.into()));
    let queries_throttled = proxy.faults_injected();
    assert!(queries_throttled >= 1);
    proxy.throttle(Operation::Query, false);

    proxy.throttle(Operation::DeleteBatch, true);
    assert_eq!(f.disconnect("c1").await, (429, TOO_MANY.into()));
    assert!(proxy.faults_injected() > queries_throttled);
    assert_eq!(
        scan(&endpoint, &table).await.len(),
        1,
        "nothing deleted yet"
    );
    proxy.throttle(Operation::DeleteBatch, false);

    assert_eq!(
        f.disconnect("c1").await,
        (200, "Disconnected. Removed 1 records.".into())
    );
    assert!(scan(&endpoint, &table).await.is_empty());
}

/// A non-default `RECORD_TTL_SECONDS` sets `expiresAt` to connect time plus
/// that (the default, 7 500 s, is checked above).
#[tokio::test]
async fn record_ttl_seconds_sets_expires_at() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ttl");
    create_table(&endpoint, &table);
    let f = Fixture::start(&endpoint, &table, &[("RECORD_TTL_SECONDS", "600")]);
    let token = f.token("ivan", &["acme", "globex"]).await;
    let before = unix_now();
    assert_eq!(f.connect(&token, "c1").await, (200, "Connected.".into()));
    let after = unix_now();
    let items = scan(&endpoint, &table).await;
    assert_eq!(items.len(), 2);
    for (_, _, _, expires_at) in items {
        assert!(
            (before + 600..=after + 600).contains(&expires_at),
            "expiresAt {expires_at}, connected between {before} and {after}"
        );
    }
}

/// Deliveries to one integration that arrive while its records are being
/// read share the next read (a burst reads twice, not once per event), and
/// never take the read under way: a socket that opened after that read
/// began still receives every event posted after it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_share_a_read_that_began_after_them() {
    use futures_util::StreamExt;
    use gitgazer_ws::dev::DevSigner;
    use gitgazer_ws_tests::dynamodb_env;
    use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const BURST: u32 = 10;
    const POOL: crate::support::Pool = crate::support::Pool {
        region: "eu-west-1",
        id: "eu-west-1_Shared1",
        client: "shared-client",
    };
    let endpoint = dynalite_endpoint();
    let table = unique_table("shared-records");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = POOL.server_on_table(&jwks, &dynamodb_env(&proxy.endpoint, &table));
    let open = |sub: &str| {
        let mut request = server
            .url("/ws")
            .replacen("http://", "ws://", 1)
            .into_client_request()
            .unwrap();
        let protocol = format!("bearer, {}", POOL.token(&signer, sub));
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        async move { tokio_tungstenite::connect_async(request).await.unwrap().0 }
    };
    let url = server.management("/integrations/acme/events");
    let post = |text: String| {
        let url = url.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .body(text)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let report: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            report["delivered"].as_u64().expect("delivered")
        })
    };

    let mut early = open("ada").await;
    // Event 0's records are read before the late socket opens, and the
    // answer is held until the burst has arrived.
    proxy.hold_answers("Query", true);
    let queries = proxy.requests("Query");
    let first = post("event 0".into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.requests("Query") == queries {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery read no records"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut late = open("bob").await;
    let burst: Vec<_> = (1..=BURST).map(|n| post(format!("event {n}"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.hold_answers("Query", false);

    assert_eq!(
        first.await.unwrap(),
        1,
        "event 0's read predates the late socket"
    );
    for delivered in burst {
        assert_eq!(
            delivered.await.unwrap(),
            2,
            "a burst event got an older read"
        );
    }
    let reads = proxy.requests("Query") - queries;
    println!(
        "{} concurrent deliveries: {reads} reads of the records",
        BURST + 1
    );
    assert!(
        reads <= BURST / 2,
        "{reads} reads for {} concurrent deliveries: none shared",
        BURST + 1
    );

    async fn texts(
        socket: &mut (
                 impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin
             ),
        n: u32,
    ) -> BTreeSet<String> {
        let mut texts = BTreeSet::new();
        while texts.len() < n as usize {
            match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    assert!(texts.insert(text.to_string()), "twice: {text}")
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                other => panic!("expected an event, got {other:?} after {texts:?}"),
            }
        }
        texts
    }
    let every = |from: u32| {
        (from..=BURST)
            .map(|n| format!("event {n}"))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(texts(&mut early, BURST + 1).await, every(0));
    assert_eq!(texts(&mut late, BURST).await, every(1));
}
