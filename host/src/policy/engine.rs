//! Engine policy, in one place: how the guest is compiled, cached, linked,
//! sandboxed and bounded ([`PolicyEngine`]: Config, pool, StoreLimits, the
//! epoch ticker and deadline, admission, the compile cache). Every knob here
//! is a decision; the comment says why.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimitsBuilder, UpdateDeadline,
};

use super::imports;
use super::request::{Capabilities, RequestState};
use crate::wit::{WsHandler, WsHandlerPre};

/// The policy component, built from `guest/` by `build.rs` with standard
/// WebAssembly features only (the build that also runs under jco).
pub static GUEST_COMPONENT: &[u8] = include_bytes!(env!("GITGAZER_WS_GUEST_WASM_PATH"));

/// The same policy built with the wide-arithmetic proposal (RSA on 64-bit
/// limbs, several times faster); `None` when this build embeds none.
pub fn wide_guest_component() -> Option<&'static [u8]> {
    static WIDE: &[u8] = include_bytes!(env!("GITGAZER_WS_GUEST_WIDE_WASM_PATH"));
    (!WIDE.is_empty()).then_some(WIDE)
}

/// Which build of the embedded policy runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuestBuild {
    /// The wide-arithmetic build when this engine compiles it, else the
    /// portable one (with a warning).
    #[default]
    Auto,
    /// Standard WebAssembly features only.
    Portable,
    /// The wide-arithmetic build; fail when it cannot be loaded.
    Wide,
}

impl GuestBuild {
    /// The names `FromStr` takes, for the command line.
    pub const NAMES: [&str; 3] = ["auto", "portable", "wide"];
}

impl FromStr for GuestBuild {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "auto" => Ok(Self::Auto),
            "portable" => Ok(Self::Portable),
            "wide" => Ok(Self::Wide),
            _ => Err(format!("{name:?}: one of {}", Self::NAMES.join(", "))),
        }
    }
}

/// Limits and choices for running the guest.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Guest instances alive at once (= requests handled concurrently); also
    /// the size of the pooling allocator.
    pub max_instances: u32,
    /// Linear memory one instance may grow to.
    pub max_memory_bytes: usize,
    /// CPU time a request may spend inside the guest (time spent waiting on
    /// the store or the key set does not count).
    pub guest_time_budget: Duration,
    /// A component (`.wasm`) to run instead of the embedded policy: another
    /// build of the same world (tests use misbehaving guests).
    pub component: Option<PathBuf>,
    /// A precompiled component (`gitgazer-ws compile`) to load instead of
    /// compiling; used when it matches this build, else compiled with a warning.
    pub precompiled: Option<PathBuf>,
    /// Where compiled components are cached between runs; `None` disables.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (falls back to on-demand when the pool's
    /// address space cannot be reserved).
    pub pooling: bool,
    /// Pooling only: how much of a linear memory stays mapped when its slot
    /// is reused (reset in place instead of returned to the kernel), so the
    /// next request does not page-fault its way back in.
    pub keep_resident_bytes: usize,
    /// Pooling only, Linux ≥ 6.7: reset only the pages a request dirtied
    /// (the `PAGEMAP_SCAN` ioctl) instead of all `keep_resident_bytes`.
    /// Ignored where the kernel lacks it. Pays for guests with a large
    /// memory; the policy's is one page, so it is off by default.
    pub pagemap_scan: bool,
    /// Which build of the embedded policy to run (ignored with `component`).
    pub guest_build: GuestBuild,
    /// Benchmarks only: `false` compiles the guest without epoch checks, so
    /// `guest_time_budget` is not enforced. Measures what the deadline costs.
    #[doc(hidden)]
    pub enforce_guest_time_budget: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 64,
            max_memory_bytes: 64 << 20,
            guest_time_budget: Duration::from_secs(1),
            component: None,
            precompiled: None,
            cache_dir: default_cache_dir(),
            pooling: true,
            // See BENCHMARKS.md (instance overhead). The policy's memory is
            // one 64 KiB page (its stack is 16 KiB: guest/build.rs); copying
            // it back from the image costs less than asking the kernel which
            // pages were written (one `PAGEMAP_SCAN` ioctl, about 2.5 µs
            // here). 4 MiB bounds what a grown memory keeps mapped.
            keep_resident_bytes: 4 << 20,
            pagemap_scan: false,
            guest_build: GuestBuild::Auto,
            enforce_guest_time_budget: true,
        }
    }
}

/// `$XDG_CACHE_HOME/gitgazer-ws` or `~/.cache/gitgazer-ws`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("gitgazer-ws"))
}

/// How often the epoch ticks; the guest's deadline is checked at each tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

// The policy is one core module and its memory; these bound one component
// instance generously, in the pool and in each store alike.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// The engine configuration shared by every allocator choice. The precompiled
/// artifact depends on it: change it and cached artifacts are recompiled.
fn base_config(options: &EngineOptions) -> Config {
    let mut config = Config::new();
    // Deadlines without fuel: epoch checks cost less on hot loops (RSA).
    config.epoch_interruption(options.enforce_guest_time_budget);
    // A deep recursion traps instead of exhausting the host's stack.
    config.max_wasm_stack(1 << 20);
    // The wide build's 64×64→128-bit multiplies (see `GuestBuild`). Only
    // validation changes for modules that do not use them.
    config.wasm_wide_arithmetic(true);
    config
}

/// An engine that compiles for any CPU of this machine's architecture, or of
/// `target` (`aarch64-unknown-linux-gnu` on x86_64, say: this build carries
/// both Lambda architectures' code generators): no CPU feature of the build
/// machine is assumed, so the artifact loads on whatever CPU the deployment
/// runs (it may be a little slower).
pub fn build_portable_engine(
    options: &EngineOptions,
    target: Option<&str>,
) -> anyhow::Result<Engine> {
    if std::env::consts::OS != "linux" {
        anyhow::bail!("portable precompiling is supported on Linux only");
    }
    let triple = match target {
        Some(triple) => triple.to_owned(),
        None => format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
    };
    let mut config = base_config(options);
    config
        .target(&triple)
        .map_err(|e| anyhow::anyhow!("target {triple}: {e}"))?;
    Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
}

/// Builds the engine: pooling allocator when it can be reserved, on-demand
/// otherwise (constrained hosts such as Lambda may refuse the reservation).
pub fn build_engine(options: &EngineOptions) -> anyhow::Result<Engine> {
    if options.pooling {
        let mut pool = PoolingAllocationConfig::default();
        let n = options.max_instances.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n * MEMORIES_PER_COMPONENT)
            .total_tables(n * TABLES_PER_COMPONENT)
            .total_stacks(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(options.max_memory_bytes)
            .linear_memory_keep_resident(options.keep_resident_bytes)
            .table_keep_resident(1 << 16)
            .pagemap_scan(if options.pagemap_scan {
                Enabled::Auto
            } else {
                Enabled::No
            });
        let mut config = base_config(options);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => return Ok(engine),
            Err(e) => tracing::warn!(
                error = %e,
                "pooling allocator unavailable; falling back to on-demand allocation"
            ),
        }
    }
    Engine::new(&base_config(options)).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
}

/// The engine, the linked policy and the bounds every request runs in.
pub struct PolicyEngine {
    engine: Engine,
    pre: WsHandlerPre<RequestState>,
    loaded: LoadedGuest,
    max_memory_bytes: usize,
    guest_time_budget: Duration,
    /// One permit per pool slot: requests beyond wait instead of failing.
    admission: Semaphore,
    max_instances: usize,
}

impl PolicyEngine {
    /// Builds the engine, loads (or compiles) the component, links it, and
    /// starts the epoch ticker that enforces guest deadlines.
    pub fn new(options: &EngineOptions) -> anyhow::Result<Self> {
        let engine = build_engine(options)?;
        let (component, loaded) = load_component(&engine, options)?;
        tracing::info!(guest = ?loaded, "policy component loaded");
        let mut linker = Linker::new(&engine);
        imports::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking the world's imports: {e}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(WsHandlerPre::new)
            .map_err(|e| anyhow::anyhow!("the guest does not fit the ws-handler world: {e}"))?;
        start_epoch_ticker(&engine);
        Ok(Self {
            engine,
            pre,
            loaded,
            max_memory_bytes: options.max_memory_bytes,
            guest_time_budget: options.guest_time_budget,
            admission: Semaphore::new(options.max_instances.max(1) as usize),
            max_instances: options.max_instances.max(1) as usize,
        })
    }

    /// Which guest runs.
    pub fn loaded_guest(&self) -> LoadedGuest {
        self.loaded
    }

    /// Instances running now (admitted requests).
    pub fn instances_in_use(&self) -> usize {
        self.max_instances
            .saturating_sub(self.admission.available_permits())
    }

    /// Waits for an instance slot (`None`: the engine is closing).
    pub async fn admit(&self) -> Option<SemaphorePermit<'_>> {
        self.admission.acquire().await.ok()
    }

    /// A fresh instance for one request: its memory bounded, and trapped
    /// once its guest time (host waits excluded) passes the budget.
    pub async fn instantiate(
        &self,
        caps: &Capabilities,
        request_id: &str,
    ) -> wasmtime::Result<(Store<RequestState>, WsHandler)> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.max_memory_bytes)
            .instances(CORE_INSTANCES_PER_COMPONENT as usize)
            .tables(TABLES_PER_COMPONENT as usize)
            .memories(MEMORIES_PER_COMPONENT as usize)
            .trap_on_grow_failure(true)
            .build();
        let state = RequestState::new(caps.clone(), request_id.to_owned(), limits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let budget = self.guest_time_budget;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |context| {
            if context.data().clock.guest_time() > budget {
                Err(wasmtime::format_err!(
                    "guest time budget of {budget:?} exceeded"
                ))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        let guest = self.pre.instantiate_async(&mut store).await?;
        Ok((store, guest))
    }
}

/// Increments the engine's epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// Which guest a runtime loaded, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedGuest {
    /// The embedded policy, standard WebAssembly features only.
    Portable,
    /// The embedded policy, wide-arithmetic build.
    Wide,
    /// `EngineOptions::component`.
    File,
    /// `EngineOptions::precompiled` (whichever build it was made from).
    Precompiled,
}

/// Loads the guest: a given precompiled artifact if it fits this engine,
/// else the chosen build of the policy (or the given component), from the
/// compile cache or compiled (and cached).
pub fn load_component(
    engine: &Engine,
    options: &EngineOptions,
) -> anyhow::Result<(Component, LoadedGuest)> {
    if let Some(path) = &options.precompiled {
        match deserialize(engine, path) {
            Ok(component) => {
                tracing::info!(path = %path.display(), "precompiled component loaded");
                return Ok((component, LoadedGuest::Precompiled));
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "precompiled component does not fit this build; compiling instead"
            ),
        }
    }
    with_guest_build(options, |wasm| load_or_compile(engine, options, wasm))
}

/// Compiles the guest for this engine into `path` (for packaging: the Lambda
/// zip ships it so no cold start pays the JIT).
pub fn precompile_to(engine: &Engine, options: &EngineOptions, path: &Path) -> anyhow::Result<()> {
    let (bytes, _) = with_guest_build(options, |wasm| {
        engine
            .precompile_component(wasm)
            .map_err(|e| anyhow::anyhow!("compiling the guest component: {e}"))
    })?;
    write_atomically(path, &bytes)
}

/// Runs `use_guest` on the component the options choose: the given file, or
/// the embedded policy's build per `guest_build`, where `Auto` falls back
/// from the wide build to the portable one when `use_guest` fails on it (an
/// engine without the wide-arithmetic proposal, e.g. another architecture).
fn with_guest_build<T>(
    options: &EngineOptions,
    use_guest: impl Fn(&[u8]) -> anyhow::Result<T>,
) -> anyhow::Result<(T, LoadedGuest)> {
    if let Some(path) = &options.component {
        let wasm = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading the component {}: {e}", path.display()))?;
        return Ok((use_guest(&wasm)?, LoadedGuest::File));
    }
    let portable = || Ok((use_guest(GUEST_COMPONENT)?, LoadedGuest::Portable));
    let wide = |wasm| Ok((use_guest(wasm)?, LoadedGuest::Wide));
    match (options.guest_build, wide_guest_component()) {
        (GuestBuild::Portable, _) | (GuestBuild::Auto, None) => portable(),
        (GuestBuild::Wide, None) => {
            anyhow::bail!("this build embeds no wide-arithmetic guest (GITGAZER_WS_GUEST_WASM)")
        }
        (GuestBuild::Wide, Some(wasm)) => wide(wasm),
        (GuestBuild::Auto, Some(wasm)) => wide(wasm).or_else(|e| {
            tracing::warn!(
                error = %format!("{e:#}"),
                "the wide-arithmetic guest does not load here; running the portable one"
            );
            portable()
        }),
    }
}

/// The cached artifact for this component and engine, else compiles (and
/// caches) it.
fn load_or_compile(
    engine: &Engine,
    options: &EngineOptions,
    wasm: &[u8],
) -> anyhow::Result<Component> {
    let cached = options
        .cache_dir
        .as_ref()
        .map(|dir| dir.join(cache_file_name(engine, wasm)));
    if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
        match deserialize(engine, path) {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale compile cache entry")
            }
        }
    }

    let started = std::time::Instant::now();
    let component = Component::new(engine, wasm)
        .map_err(|e| anyhow::anyhow!("compiling the guest component: {e}"))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled the guest component"
    );
    if let Some(path) = cached
        && let Err(e) = write_artifact(&component, &path)
    {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
    }
    Ok(component)
}

fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact
    // made by this wasmtime version; it checks the version and engine
    // configuration and fails if they differ. The files read here are ours:
    // written by `precompile_to` / the compile cache in a directory of the
    // user running the host, or given explicitly by the operator.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| anyhow::anyhow!("{e}"))
}

fn write_artifact(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("serializing: {e}"))?;
    write_atomically(path, &bytes)
}

/// Writes through a temporary file and a rename, so a reader never sees half
/// an artifact.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per writer: two threads of one process may compile the same
    // artifact at once, and a shared name would let one rename the other's
    // half-written file into place.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The cache key: the component's bytes and everything of the engine that a
/// compiled artifact depends on (wasmtime version, target, settings).
fn cache_file_name(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hasher = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hasher);
    let mut digest = Sha256::new();
    digest.update(wasm);
    digest.update(engine_hasher.finish().to_le_bytes());
    digest.update(env!("CARGO_PKG_VERSION").as_bytes());
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("guest-{hex}.cwasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(guest_build: GuestBuild) -> EngineOptions {
        EngineOptions {
            guest_build,
            ..EngineOptions::default()
        }
    }

    /// `use_guest` that fails on the wide build, like an engine without the
    /// wide-arithmetic proposal.
    fn refuse_wide(wasm: &[u8]) -> anyhow::Result<usize> {
        match wide_guest_component() {
            Some(wide) if wasm == wide => anyhow::bail!("wide-arithmetic not enabled"),
            _ => Ok(wasm.len()),
        }
    }

    #[test]
    fn auto_prefers_the_wide_build_and_falls_back_to_the_portable_one() {
        assert!(wide_guest_component().is_some(), "this build embeds both");
        let loaded = |build| with_guest_build(&options(build), |wasm| Ok(wasm.len())).unwrap();
        assert_eq!(loaded(GuestBuild::Auto).1, LoadedGuest::Wide);
        assert_eq!(loaded(GuestBuild::Wide).1, LoadedGuest::Wide);
        assert_eq!(loaded(GuestBuild::Portable).1, LoadedGuest::Portable);

        let (len, guest) = with_guest_build(&options(GuestBuild::Auto), refuse_wide).unwrap();
        assert_eq!(guest, LoadedGuest::Portable);
        assert_eq!(len, GUEST_COMPONENT.len());
        // Asked for explicitly, the wide build fails instead of falling back.
        assert!(with_guest_build(&options(GuestBuild::Wide), refuse_wide).is_err());
    }

    #[test]
    fn an_engine_without_the_proposal_rejects_the_wide_build_only() {
        let mut config = Config::new();
        config.wasm_wide_arithmetic(false);
        let engine = Engine::new(&config).unwrap();
        let wide = wide_guest_component().unwrap();
        assert!(Component::new(&engine, wide).is_err());
        assert!(Component::new(&engine, GUEST_COMPONENT).is_ok());
    }
}
