//! Under Lambda: the same counters as `/metrics`, for one invocation, as one
//! CloudWatch Embedded Metric Format line on stdout (CloudWatch turns it
//! into metrics; no agent, no API call).
//!
//! Written by hand over metrics-util's registry: `metrics_cloudwatch_embedded`
//! writes one document per label set and makes every label a dimension, so a
//! CONNECT would give several lines and each status × rejection pair its own
//! custom metric. Here one invocation is one line; a label set stays in the
//! metric's name (`gitgazer_ws_connects_total{status=401,rejection=expired}`),
//! and the dimensions are the operator's (`METRICS_DIMENSIONS`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "GitGazerWs";

/// Where an invocation's metrics go in CloudWatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmfOptions {
    pub namespace: String,
    /// `(name, value)` pairs, in order.
    pub dimensions: Vec<(String, String)>,
}

impl EmfOptions {
    /// From `METRICS_NAMESPACE` and `METRICS_DIMENSIONS` (`Name=Value,...`;
    /// default `FunctionName=$AWS_LAMBDA_FUNCTION_NAME` when that is set).
    pub fn from_env(
        namespace: Option<&str>,
        dimensions: Option<&str>,
        function_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let namespace = namespace
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned();
        let dimensions = match dimensions.map(str::trim).filter(|d| !d.is_empty()) {
            Some(list) => list
                .split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                        Ok((name.trim().to_owned(), value.trim().to_owned()))
                    }
                    _ => Err(anyhow::anyhow!(
                        "METRICS_DIMENSIONS: {pair:?} is not Name=Value (a comma-separated list of them)"
                    )),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => function_name
                .filter(|f| !f.is_empty())
                .map(|f| vec![("FunctionName".to_owned(), f.to_owned())])
                .unwrap_or_default(),
        };
        // CloudWatch allows 30 dimensions per set.
        if dimensions.len() > 30 {
            anyhow::bail!("METRICS_DIMENSIONS: at most 30 dimensions");
        }
        Ok(Self {
            namespace,
            dimensions,
        })
    }
}

/// The recorder: counters and histograms since the last [`EmfRecorder::flush`].
pub struct EmfRecorder {
    registry: Registry<Key, AtomicStorage>,
    options: EmfOptions,
}

impl EmfRecorder {
    pub fn new(options: EmfOptions) -> Self {
        Self {
            registry: Registry::atomic(),
            options,
        }
    }

    /// Installs a recorder as the process's and returns it for flushing.
    pub fn install(options: EmfOptions) -> anyhow::Result<Arc<Self>> {
        let recorder = Arc::new(Self::new(options));
        metrics::set_global_recorder(Shared(recorder.clone()))
            .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
        super::recorder_installed();
        Ok(recorder)
    }

    /// The EMF document of what was recorded since the last flush, and a
    /// fresh start; `None` when nothing was.
    pub fn flush(&self, timestamp_ms: u64, request_id: &str) -> Option<Value> {
        let mut values = Map::new();
        let mut metrics = Vec::new();
        self.registry.visit_counters(|key, counter| {
            let count = counter.swap(0, Ordering::Relaxed);
            if count > 0 {
                let name = metric_name(key);
                metrics.push(json!({ "Name": name, "Unit": "Count" }));
                values.insert(name, count.into());
            }
        });
        self.registry.visit_histograms(|key, histogram| {
            let mut samples = Vec::new();
            histogram.clear_with(|chunk| samples.extend_from_slice(chunk));
            if !samples.is_empty() {
                let name = metric_name(key);
                let unit = if key.name().ends_with("_seconds") {
                    "Seconds"
                } else {
                    "None"
                };
                metrics.push(json!({ "Name": name, "Unit": unit }));
                // EMF takes at most 100 values of one metric per document.
                samples.truncate(100);
                values.insert(name, samples.into());
            }
        });
        if metrics.is_empty() {
            return None;
        }
        metrics.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
        let dimension_names: Vec<&str> = self
            .options
            .dimensions
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.options.namespace,
                    "Dimensions": [dimension_names],
                    "Metrics": metrics,
                }],
            }),
        );
        for (name, value) in &self.options.dimensions {
            document.insert(name.clone(), value.clone().into());
        }
        // A property, not a dimension: finds the invocation's log lines.
        document.insert("requestId".into(), request_id.into());
        document.extend(values);
        Some(Value::Object(document))
    }
}

/// A name with its labels, in the order given:
/// `gitgazer_ws_connects_total{status=401,rejection=expired}`.
fn metric_name(key: &Key) -> String {
    let mut name = key.name().to_owned();
    let mut labels = key.labels().peekable();
    if labels.peek().is_some() {
        name.push('{');
        for (i, label) in labels.enumerate() {
            if i > 0 {
                name.push(',');
            }
            name.push_str(label.key());
            name.push('=');
            name.push_str(label.value());
        }
        name.push('}');
    }
    name
}

/// The recorder the facade holds; the Lambda entry keeps another handle.
struct Shared(Arc<EmfRecorder>);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        // Gauges describe a long-running process; one invocation has none
        // worth sending. Recorded, never flushed.
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_per_flush_with_labels_in_the_name_then_nothing() {
        let recorder = Arc::new(EmfRecorder::new(
            EmfOptions::from_env(None, Some("Service=ws, Stage=prod"), None).unwrap(),
        ));
        metrics::with_local_recorder(&Shared(recorder.clone()), || {
            crate::telemetry::connect(401, Some(crate::wit::types::TokenRejection::Expired));
            crate::telemetry::connect(401, Some(crate::wit::types::TokenRejection::Expired));
            crate::telemetry::records_written(3);
            crate::telemetry::store_call("put_all", "ok", std::time::Duration::from_millis(4));
        });
        let document = recorder.flush(1_700_000_000_000, "req-1").unwrap();
        assert_eq!(document["requestId"], "req-1");
        let aws = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], DEFAULT_NAMESPACE);
        assert_eq!(aws["Dimensions"], json!([["Service", "Stage"]]));
        assert_eq!(document["Stage"], "prod");
        assert_eq!(
            document["gitgazer_ws_connects_total{status=401,rejection=expired}"],
            2
        );
        assert_eq!(document["gitgazer_ws_records_written_total"], 3);
        assert_eq!(
            document["gitgazer_ws_store_call_duration_seconds{operation=put_all}"],
            json!([0.004])
        );
        // Every value has its metric definition, and nothing else does.
        let names: Vec<&str> = aws["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        for name in names {
            assert!(document.get(name).is_some(), "{name}");
        }
        assert_eq!(recorder.flush(0, "req-2"), None, "a flush starts afresh");
    }

    #[test]
    fn dimensions_default_to_the_function_and_must_be_pairs() {
        let options = EmfOptions::from_env(Some("Mine"), None, Some("gg-ws")).unwrap();
        assert_eq!(options.namespace, "Mine");
        assert_eq!(
            options.dimensions,
            vec![("FunctionName".to_owned(), "gg-ws".to_owned())]
        );
        let err = EmfOptions::from_env(None, Some("Service"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("METRICS_DIMENSIONS"), "{err}");
    }
}
