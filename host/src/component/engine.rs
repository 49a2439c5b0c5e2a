//! Engine policy, in one place: how the guest is compiled, cached, sandboxed
//! and bounded. Every knob here is a decision; the comment says why.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The policy component, built from `guest/` by `build.rs`.
pub static GUEST_COMPONENT: &[u8] = include_bytes!(env!("GITGAZER_WS_GUEST_WASM_PATH"));

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

// A Rust wasip2 component holds a few core modules (the program, WASI
// adapter shims); these bound one component instance generously.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// The engine configuration shared by every allocator choice. The precompiled
/// artifact depends on it: change it and cached artifacts are recompiled.
fn base_config() -> Config {
    let mut config = Config::new();
    // Deadlines without fuel: epoch checks cost less on hot loops (RSA).
    config.epoch_interruption(true);
    // A deep recursion traps instead of exhausting the host's stack.
    config.max_wasm_stack(1 << 20);
    config
}

/// An engine that compiles for any CPU of this machine's architecture: no
/// CPU feature of the build machine is assumed, so the artifact loads on
/// whatever CPU the deployment runs (it may be a little slower).
pub fn build_portable_engine() -> anyhow::Result<Engine> {
    if std::env::consts::OS != "linux" {
        anyhow::bail!("portable precompiling is supported on Linux only");
    }
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut config = base_config();
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
            // Keep the first pages of a reused slot resident: cheaper than
            // zeroing through madvise + page faults on the next request.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16);
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => return Ok(engine),
            Err(e) => tracing::warn!(
                error = %e,
                "pooling allocator unavailable; falling back to on-demand allocation"
            ),
        }
    }
    Engine::new(&base_config()).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
}

/// Loads the guest: a given precompiled artifact if it fits this engine,
/// else the cached artifact for this component and engine, else compiles
/// (and caches) it.
pub fn load_component(engine: &Engine, options: &EngineOptions) -> anyhow::Result<Component> {
    let wasm = guest_bytes(options)?;
    if let Some(path) = &options.precompiled {
        match deserialize(engine, path) {
            Ok(component) => {
                tracing::info!(path = %path.display(), "precompiled component loaded");
                return Ok(component);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "precompiled component does not fit this build; compiling instead"
            ),
        }
    }

    let cached = options
        .cache_dir
        .as_ref()
        .map(|dir| dir.join(cache_file_name(engine, &wasm)));
    if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
        match deserialize(engine, path) {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale compile cache entry")
            }
        }
    }

    let started = std::time::Instant::now();
    let component = Component::new(engine, &wasm)
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

/// Compiles the embedded guest for this engine into `path` (for packaging:
/// the Lambda zip ships it so no cold start pays the JIT).
pub fn precompile_to(engine: &Engine, options: &EngineOptions, path: &Path) -> anyhow::Result<()> {
    let bytes = engine
        .precompile_component(&guest_bytes(options)?)
        .map_err(|e| anyhow::anyhow!("compiling the guest component: {e}"))?;
    write_atomically(path, &bytes)
}

/// The embedded policy, or the component file the options name.
fn guest_bytes(options: &EngineOptions) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    match &options.component {
        None => Ok(GUEST_COMPONENT.into()),
        Some(path) => std::fs::read(path)
            .map(Into::into)
            .map_err(|e| anyhow::anyhow!("reading the component {}: {e}", path.display())),
    }
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
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
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
