//! `GET /metrics` for `serve`: the `metrics` facade's Prometheus exporter
//! (metrics-exporter-prometheus), installed as the process's recorder and
//! rendered by the management listener, not by an HTTP listener of its own.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds: a policy call or a post takes from tens of
/// microseconds to the store's 8 s timeout.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the Prometheus recorder for this process and returns what
/// renders it. Histogram samples are folded into buckets every 5 s, so
/// memory stays bounded when nobody scrapes.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    super::recorder_installed();
    super::describe();
    super::initialize();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
