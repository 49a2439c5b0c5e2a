//! A key set fetched over HTTP(S) and cached (Cognito mode).
//!
//! - fetched once, then served from the cache;
//! - a refresh (an unknown kid) refetches at most once per cool-down, so a
//!   flood of random kids cannot become a flood of fetches; the cool-down
//!   starts at a refresh, not at the first fetch, so a key rotation is picked
//!   up by the first token that uses the new key;
//! - concurrent fetches merge into one request;
//! - a failed refetch keeps the last good set; a set the policy refuses
//!   (`validate_key_set`) is a failed fetch, never cached.
//!
//! Compare aws-jwt-verify's `SimpleJwksCache` and its penalty box.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{KeySetSource, validate_key_set};
use crate::telemetry;

/// Bounds on one fetch.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
    /// Minimum time between two refetches asked for by unknown kids.
    pub refresh_cooldown: Duration,
    /// With no key set cached, how long a failed fetch is remembered before
    /// the next request may try again (no fetch storm while the server is down).
    pub failure_backoff: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(4),
            max_body_bytes: 64 * 1024,
            refresh_cooldown: Duration::from_secs(10),
            failure_backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct CacheState {
    key_set: Option<Arc<str>>,
    /// When the last refetch asked for by an unknown kid started.
    last_refresh: Option<Instant>,
    /// When the last fetch failed, and why.
    last_failure: Option<(Instant, String)>,
    /// Bumped by each completed fetch, so waiters can tell one happened.
    generation: u64,
}

pub struct RemoteKeySet {
    url: reqwest::Url,
    client: reqwest::Client,
    limits: FetchLimits,
    state: Mutex<CacheState>,
    /// Held while fetching: concurrent callers wait and reuse the result.
    fetching: tokio::sync::Mutex<()>,
    fetch_count: std::sync::atomic::AtomicU64,
}

impl RemoteKeySet {
    pub fn new(url: &str, limits: FetchLimits) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("invalid JWKS URL {url:?}: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            anyhow::bail!("JWKS URL must be http(s): {url}");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url,
            client,
            limits,
            state: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
            fetch_count: Default::default(),
        })
    }

    /// How many fetches were attempted (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetch_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One fetch, counted by outcome (the metric's `outcome` label).
    async fn fetch(&self) -> Result<Arc<str>, String> {
        self.fetch_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.fetch_once().await {
            Ok((set, keys)) => {
                telemetry::key_set_fetch("ok");
                telemetry::key_set_loaded(keys);
                Ok(set)
            }
            Err((outcome, reason)) => {
                telemetry::key_set_fetch(outcome);
                Err(reason)
            }
        }
    }

    async fn fetch_once(&self) -> Result<(Arc<str>, usize), (&'static str, String)> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| ("unreachable", format!("fetching {}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            return Err((
                "http_error",
                format!("fetching {}: HTTP {status}", self.url),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ("unreachable", format!("reading {}: {e}", self.url)))?
        {
            if body.len() + chunk.len() > self.limits.max_body_bytes {
                return Err((
                    "too_large",
                    format!(
                        "{}: key set larger than {} bytes",
                        self.url, self.limits.max_body_bytes
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let json =
            String::from_utf8(body).map_err(|_| ("refused", format!("{}: not UTF-8", self.url)))?;
        let keys =
            validate_key_set(&json).map_err(|e| ("refused", format!("{}: {e}", self.url)))?;
        Ok((json.into(), keys))
    }
}

#[async_trait::async_trait]
impl KeySetSource for RemoteKeySet {
    async fn key_set(&self, refresh: bool) -> Result<Arc<str>, String> {
        let seen_generation = {
            let state = self.lock();
            match (&state.key_set, refresh) {
                (Some(set), false) => return Ok(set.clone()),
                (Some(set), true) => {
                    let cooling = state
                        .last_refresh
                        .is_some_and(|at| at.elapsed() < self.limits.refresh_cooldown);
                    if cooling {
                        return Ok(set.clone());
                    }
                }
                (None, _) => {
                    if let Some((at, reason)) = &state.last_failure
                        && at.elapsed() < self.limits.failure_backoff
                    {
                        return Err(reason.clone());
                    }
                }
            }
            state.generation
        };

        let _fetching = self.fetching.lock().await;
        {
            // Someone else fetched while we waited: use their result.
            let state = self.lock();
            if state.generation != seen_generation {
                return state
                    .key_set
                    .clone()
                    .ok_or_else(|| format!("key set unavailable from {}", self.url));
            }
        }
        if refresh {
            self.lock().last_refresh = Some(Instant::now());
        }
        let fetched = self.fetch().await;
        let mut state = self.lock();
        state.generation += 1;
        match fetched {
            Ok(set) => {
                state.key_set = Some(set.clone());
                state.last_failure = None;
                Ok(set)
            }
            Err(reason) => {
                tracing::warn!(%reason, "JWKS fetch failed");
                state.last_failure = Some((Instant::now(), reason.clone()));
                // Keep serving the last good set, if there is one.
                state.key_set.clone().ok_or(reason)
            }
        }
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}
