//! Command line and environment: every setting has a flag and an env
//! variable (the original handler's names where it had one). `--help`
//! documents them all. Defaults come from the modules that own each knob;
//! this file only names them for the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::delivery::nodes::ManagementToken;
use crate::delivery::{DeliveryOptions, MAX_MESSAGE_BYTES};
use crate::edge::server::ConnectionLimits;
use crate::edge::websocket::{
    DEFAULT_AUTH_GRACE_SECONDS, LONGEST_SOCKET_LIMIT, QUEUED_MESSAGE_OVERHEAD, SocketLimits,
};
use crate::policy::{EngineOptions, GuestBuild};
use crate::settings::{DEFAULT_LEEWAY_SECONDS, DEFAULT_RECORD_TTL_SECONDS, TokenMode, non_empty};
use crate::startup::StartOptions;
use crate::store::DynamoDbOptions;
use crate::wit::types::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "gitgazer-ws",
    version,
    about = "GitGazer's WebSocket connection handler: verifies Cognito id tokens on CONNECT and \
             keeps one record per (integration, connection)",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Without a command: the Lambda runtime when AWS_LAMBDA_RUNTIME_API is
    /// set (the `bootstrap` of a Lambda zip), else this help.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP server (the dev server when COGNITO_USER_POOL_ID is unset).
    Serve(ServeArgs),
    /// Serves the AWS Lambda Runtime API loop (API Gateway WebSocket events).
    Lambda,
    /// Verifies one id token and prints one line of JSON; exit 0 valid, 1 invalid, 2 usage.
    VerifyToken(VerifyTokenArgs),
    /// Handles one API Gateway WebSocket event (JSON) and prints the proxy response.
    HandleEvent(HandleEventArgs),
    /// Manages the DynamoDB table (TABLE_NAME).
    #[command(subcommand)]
    Table(TableCommand),
    /// Sends a message to every connection of an integration through the API
    /// Gateway Management API (WEBSOCKET_API_ENDPOINT; records from
    /// TABLE_NAME) and prints the counts as JSON; exit 0 when every live
    /// connection got it or was gone, 1 when some failed, 2 usage.
    Deliver(DeliverArgs),
    /// Ends a user's access at once: stores a revocation (their tokens issued
    /// until now are refused at CONNECT and refresh), deletes their records
    /// and closes their connections (4003); prints the counts as JSON; exit 0
    /// when every record was deleted and every connection closed or gone, 1
    /// when some were not, 2 usage or a store error.
    Evict(EvictArgs),
    /// Precompiles the embedded policy component into FILE, for this CPU or
    /// (--portable) any CPU of its architecture; load it with --precompiled
    /// (or put it beside the executable as gitgazer-ws.cwasm).
    Compile(CompileArgs),
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Creates the table (keys integrationId/connectionId, a KEYS_ONLY GSI on
    /// connectionId, on-demand billing), waits until it is active, and
    /// enables TTL on expiresAt. An existing table is kept.
    Create(TableCreateArgs),
}

#[derive(Debug, Args)]
pub struct TableCreateArgs {
    /// Also a KEYS_ONLY GSI on sub (named by --sub-index), so that `evict`
    /// finds a user's records without --integration (one more index write
    /// per record).
    #[arg(long)]
    pub with_sub_index: bool,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// AWS region of the Cognito user pool (and of DynamoDB).
    #[arg(long, env = "AWS_REGION", global = true)]
    pub region: Option<String>,
    /// Cognito user pool id (`<region>_<id>`); unset means dev mode.
    #[arg(long, env = "COGNITO_USER_POOL_ID", global = true)]
    pub user_pool_id: Option<String>,
    /// Cognito app client id: the `aud` tokens must carry; several (a web and
    /// a mobile client of one pool) separated by commas, any of them accepted.
    #[arg(long, env = "COGNITO_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// Where to fetch the key set instead of the user pool's well-known URL.
    #[arg(long, env = "COGNITO_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,
    /// DynamoDB table for connection records, a name or a table ARN; unset
    /// keeps them in memory. Alias: DYNAMO_DB_CONNECTIONS_TABLE_ARN (GitGazer's
    /// name).
    #[arg(long, env = "TABLE_NAME", global = true)]
    pub table_name: Option<String>,
    /// Name of the table's GSI on connectionId [default: connectionId-index].
    /// Alias: DYNAMO_DB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX (GitGazer's name).
    #[arg(
        long,
        env = "DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX",
        global = true
    )]
    pub connection_id_index: Option<String>,
    /// Name of the table's optional KEYS_ONLY GSI on sub (`evict` uses it
    /// when no --integration is given).
    #[arg(long, env = "DYNAMODB_SUB_INDEX", default_value = DEFAULT_SUB_INDEX, global = true)]
    pub sub_index: String,
    /// Items per DynamoDB Query page (unset: DynamoDB's 1 MB pages).
    #[arg(long, env = "DYNAMODB_QUERY_PAGE_LIMIT", global = true)]
    pub query_page_limit: Option<u16>,
    /// Clock skew tolerated on exp, nbf and iat.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = DEFAULT_LEEWAY_SECONDS, global = true)]
    pub leeway_seconds: u32,
    /// Lifetime of a stored record (its expiresAt TTL).
    #[arg(long, env = "RECORD_TTL_SECONDS", default_value_t = DEFAULT_RECORD_TTL_SECONDS, global = true)]
    pub record_ttl_seconds: u32,
    /// Guest instances alive at once (requests handled concurrently).
    #[arg(long, env = "MAX_INSTANCES", default_value_t = EngineOptions::default().max_instances, global = true)]
    pub max_instances: u32,
    /// Linear memory one guest instance may use, in MiB.
    #[arg(long, env = "GUEST_MEMORY_MIB", default_value_t = EngineOptions::default().max_memory_bytes >> 20, global = true)]
    pub guest_memory_mib: usize,
    /// Guest CPU time one request may use, in milliseconds.
    #[arg(
        long,
        env = "GUEST_TIME_BUDGET_MS",
        default_value_t = EngineOptions::default().guest_time_budget.as_millis() as u64,
        global = true
    )]
    pub guest_time_budget_ms: u64,
    /// Run this component (.wasm) instead of the embedded policy.
    #[arg(long, env = "GITGAZER_WS_COMPONENT", global = true)]
    pub component: Option<PathBuf>,
    /// A precompiled component (from `gitgazer-ws compile`) to load
    /// [default: gitgazer-ws.cwasm beside the executable, when present].
    #[arg(long, env = "GITGAZER_WS_PRECOMPILED", global = true)]
    pub precompiled: Option<PathBuf>,
    /// Cache for the compiled component [default: $XDG_CACHE_HOME/gitgazer-ws or ~/.cache/gitgazer-ws].
    #[arg(long, env = "GITGAZER_WS_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Which build of the embedded policy runs: wide (wide-arithmetic
    /// proposal, faster RSA), portable (standard wasm only), or auto (wide
    /// when this engine loads it).
    #[arg(
        long,
        env = "GITGAZER_WS_GUEST_BUILD",
        default_value = "auto",
        value_parser = PossibleValuesParser::new(GuestBuild::NAMES)
            .try_map(|name| name.parse::<GuestBuild>()),
        global = true
    )]
    pub guest_build: GuestBuild,
    /// Do not cache the compiled component.
    #[arg(long, env = "GITGAZER_WS_NO_CACHE", global = true)]
    pub no_cache: bool,
    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port; the chosen one is logged).
    #[arg(long, env = "PORT", default_value_t = 8081)]
    pub port: u16,
    /// Address to bind the public listener (`/ws`, `/healthz`; in dev mode
    /// also the test routes and `/dev/*`). Dev mode always binds 127.0.0.1.
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The management listener (ADDR:PORT; port 0 picks one): delivery,
    /// `/@connections/{id}`, `/status`, `/metrics`, `/readyz`, and in
    /// Cognito mode the test routes `/connect`, `/disconnect`, `/events`.
    /// It answers loopback peers only, unless MANAGEMENT_TOKEN is set; none
    /// of it is served on the public port. Dev mode binds 127.0.0.1.
    #[arg(long, env = "MANAGEMENT_BIND", default_value = "127.0.0.1:8082")]
    pub management_bind: std::net::SocketAddr,
    /// The management listener's URL as other nodes reach it (several nodes
    /// on one table); records of this node's sockets name it, followed by
    /// `/n/{incarnation}`. Default: the listener's own address. A
    /// non-loopback URL needs MANAGEMENT_TOKEN.
    #[arg(long, env = "ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// A secret shared by every node (at least 32 bytes): when set, every
    /// management request must carry `Authorization: Bearer <token>`
    /// (loopback included), from any address, and posts to other nodes
    /// carry it.
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub management_token: Option<String>,
    /// After SIGTERM or Ctrl-C: how long in-flight requests may take to
    /// finish before the server exits anyway.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// Where `POST /integrations/{id}/events` delivers: an API Gateway
    /// Management API endpoint; unset: this host's own WebSocket endpoint.
    #[arg(long, env = "WEBSOCKET_API_ENDPOINT")]
    pub websocket_api_endpoint: Option<String>,
    /// Open connections on the public listener at once, WebSockets
    /// included; beyond it new ones wait in the kernel's queue. Capped by
    /// what the open-file limit leaves (a warning says so).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections,
          value_parser = clap::value_parser!(u64).range(1..).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    pub max_connections: usize,
    /// A connection must send a whole request head within this time of
    /// opening, and again of each response (so it is also the keep-alive
    /// idle timeout); else it is closed. Both listeners.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", value_parser = positive_duration,
          default_value_t = ConnectionLimits::default().header_timeout.into())]
    pub http_header_timeout: humantime::Duration,
    /// Open WebSockets at once on `/ws`; more are refused with 503.
    #[arg(long, env = "MAX_WEBSOCKETS", default_value_t = SocketLimits::default().max_connections)]
    pub max_websockets: usize,
    /// Open WebSockets of one user (counted by the token's `sub`) at once;
    /// more are refused with 503, so one valid token cannot take every slot.
    #[arg(long, env = "MAX_WEBSOCKETS_PER_USER", default_value_t = SocketLimits::default().max_per_user)]
    pub max_websockets_per_user: usize,
    /// A WebSocket without a data frame either way for this long is closed
    /// (API Gateway: 10 min). A duration: `90s`, `10m`, `1h 30m`.
    #[arg(long, env = "WS_IDLE_TIMEOUT", value_parser = positive_duration,
          default_value_t = SocketLimits::default().idle_timeout.into())]
    pub ws_idle_timeout: humantime::Duration,
    /// A WebSocket is closed at this age (API Gateway: 2 h).
    #[arg(long, env = "WS_MAX_AGE", value_parser = positive_duration,
          default_value_t = SocketLimits::default().max_age.into())]
    pub ws_max_age: humantime::Duration,
    /// A ping this often; a WebSocket that has not answered the previous
    /// one by then is dropped.
    #[arg(long, env = "WS_PING_INTERVAL", value_parser = positive_duration,
          default_value_t = SocketLimits::default().ping_interval.into())]
    pub ws_ping_interval: humantime::Duration,
    /// Bytes waiting for one WebSocket (plus 64 per message); a reader that
    /// falls further behind is disconnected. At least one message (128 KiB).
    #[arg(long, env = "WS_SEND_QUEUE_BYTES", default_value_t = SocketLimits::default().send_queue_bytes as u64,
          value_parser = clap::value_parser!(u64).range(SMALLEST_SEND_QUEUE..))]
    pub ws_send_queue_bytes: u64,
    /// Seconds a WebSocket stays open after its token's `exp` without an
    /// in-band refresh (deliveries stop at `exp`); then it is closed with
    /// 4001 `token expired` and its records are deleted.
    #[arg(long, env = "AUTH_GRACE_SECONDS", default_value_t = DEFAULT_AUTH_GRACE_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub auth_grace_seconds: u64,
}

/// The management token, checked (`None` when unset or empty).
pub fn management_token(text: Option<&str>) -> anyhow::Result<Option<ManagementToken>> {
    text.filter(|token| !token.is_empty())
        .map(ManagementToken::new)
        .transpose()
}

/// A send queue must hold the largest message.
const SMALLEST_SEND_QUEUE: u64 = (MAX_MESSAGE_BYTES + QUEUED_MESSAGE_OVERHEAD) as u64;

/// A duration such as `500ms`, `30s`, `10m` or `2h`: more than zero, at
/// most 366 days.
fn positive_duration(text: &str) -> Result<humantime::Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30s, 10m, 2h)"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    if duration > LONGEST_SOCKET_LIMIT {
        return Err("must be at most 366 days".into());
    }
    Ok(duration.into())
}

#[derive(Debug, Args)]
pub struct VerifyTokenArgs {
    /// The key set: a file path or an http(s) URL.
    #[arg(long)]
    pub jwks: String,
    /// Verify as of this time (seconds since the Unix epoch) instead of now.
    #[arg(long)]
    pub now: Option<u64>,
    /// The id token; `-` reads it from standard input (keeps it out of `ps`).
    pub token: String,
}

#[derive(Debug, Args)]
pub struct HandleEventArgs {
    /// The event file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// The integration (the `integrationId` of the records).
    #[arg(long)]
    pub integration: String,
    /// The message file; `-` or nothing reads standard input.
    #[arg(long)]
    pub message: Option<PathBuf>,
    /// Where records that name no endpoint of their own go (older records):
    /// a Management API endpoint,
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`, or a
    /// node's management URL. Records that name one go there.
    #[arg(long, env = "WEBSOCKET_API_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The nodes' shared management secret, for records held by
    /// self-hosted nodes that require it.
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub management_token: Option<String>,
    /// Posts in flight at once.
    #[arg(long, env = "DELIVERY_CONCURRENCY", default_value_t = DeliveryOptions::default().concurrency)]
    pub concurrency: usize,
    /// Seconds after a connection's token expired (`authExpiresAt`) that an
    /// API Gateway connection may still refresh; past them, this delivery
    /// ends it (a last close message, DeleteConnection, records deleted).
    #[arg(long, env = "AUTH_GRACE_SECONDS", default_value_t = DEFAULT_AUTH_GRACE_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub auth_grace_seconds: u64,
}

#[derive(Debug, Args)]
pub struct EvictArgs {
    /// The user: their tokens' `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// Look for the user's records in this integration only (repeatable);
    /// without it, through the table's sub index (--sub-index). The
    /// revocation holds for every integration either way.
    #[arg(long = "integration", value_name = "ID")]
    pub integrations: Vec<String>,
    /// How long the revocation is kept: at least as long as an id token can
    /// live (Cognito: at most a day).
    #[arg(long, env = "REVOCATION_TTL_SECONDS", default_value_t = DEFAULT_REVOCATION_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=366 * 86_400))]
    pub revocation_ttl_seconds: u64,
    /// Where records that name no endpoint of their own are closed (as for
    /// `deliver`).
    #[arg(long, env = "WEBSOCKET_API_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The nodes' shared management secret, for connections held by
    /// self-hosted nodes that require it.
    #[arg(long, env = "MANAGEMENT_TOKEN", hide_env_values = true)]
    pub management_token: Option<String>,
}

/// How long a revocation is kept by default: a day, an id token's longest
/// life in Cognito.
pub const DEFAULT_REVOCATION_TTL_SECONDS: u64 = 86_400;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Where to write the precompiled component.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Compile for any x86_64/aarch64 CPU of this architecture (no features
    /// of this machine's CPU assumed): for shipping, e.g. in the Lambda zip.
    #[arg(long)]
    pub portable: bool,
    /// Compile for any CPU of this target instead (implies --portable):
    /// x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu, e.g. the arm64
    /// Lambda zip's component, made on x86_64.
    #[arg(long, value_parser = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"])]
    pub target: Option<String>,
}

impl GlobalArgs {
    /// Everything `startup::start` needs; a configuration error names the
    /// variable.
    pub fn start_options(&self) -> anyhow::Result<StartOptions> {
        let mode = self.token_mode()?;
        Ok(StartOptions {
            settings: self.policy_settings(&mode),
            mode,
            engine: self.engine_options(),
            table: self.dynamodb_options()?,
        })
    }

    pub fn token_mode(&self) -> anyhow::Result<TokenMode> {
        TokenMode::new(
            self.user_pool_id.as_deref(),
            self.region.as_deref(),
            self.client_id.as_deref(),
            self.jwks_url.as_deref(),
        )
    }

    pub fn policy_settings(&self, mode: &TokenMode) -> Settings {
        mode.policy_settings(self.leeway_seconds, self.record_ttl_seconds)
    }

    pub fn engine_options(&self) -> EngineOptions {
        let defaults = EngineOptions::default();
        EngineOptions {
            max_instances: self.max_instances.max(1),
            max_memory_bytes: self.guest_memory_mib.max(1) << 20,
            guest_time_budget: Duration::from_millis(self.guest_time_budget_ms.max(1)),
            component: self.component.clone(),
            precompiled: self
                .precompiled
                .clone()
                .or_else(precompiled_beside_executable),
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or(defaults.cache_dir.clone())
            },
            guest_build: self.guest_build,
            ..defaults
        }
    }

    /// The table settings, when TABLE_NAME (or its alias) is set; an error
    /// when a variable and its alias disagree, or the ARN is not a table's.
    pub fn dynamodb_options(&self) -> anyhow::Result<Option<DynamoDbOptions>> {
        self.dynamodb_options_with(|name| std::env::var(name).ok())
    }

    /// `dynamodb_options` with the aliases read through `env`.
    fn dynamodb_options_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<DynamoDbOptions>> {
        let region = non_empty(self.region.as_deref());
        let table = with_alias(
            ("TABLE_NAME (--table-name)", self.table_name.as_deref()),
            (TABLE_NAME_ALIAS, env(TABLE_NAME_ALIAS).as_deref()),
            |a, b| table_name_of(a) == table_name_of(b),
        )?;
        let Some(table) = table else {
            return Ok(None);
        };
        check_table_arn(&table, region)?;
        let connection_id_index = with_alias(
            (
                "DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX (--connection-id-index)",
                self.connection_id_index.as_deref(),
            ),
            (
                CONNECTION_ID_INDEX_ALIAS,
                env(CONNECTION_ID_INDEX_ALIAS).as_deref(),
            ),
            |a, b| a == b,
        )?
        .unwrap_or_else(|| DEFAULT_CONNECTION_ID_INDEX.to_owned());
        Ok(Some(DynamoDbOptions {
            table,
            connection_id_index,
            sub_index: self.sub_index.clone(),
            region: region.map(str::to_owned),
            query_page_limit: self.query_page_limit.filter(|&n| n > 0).map(i32::from),
            unprocessed_retry: Default::default(),
            rollback_retry: Default::default(),
        }))
    }
}

/// GitGazer's deployment names the table variable so (and sets the ARN).
pub const TABLE_NAME_ALIAS: &str = "DYNAMO_DB_CONNECTIONS_TABLE_ARN";
/// GitGazer's deployment names the index variable so.
pub const CONNECTION_ID_INDEX_ALIAS: &str = "DYNAMO_DB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX";
/// The GSI on connectionId unless configured (GitGazer's name for it).
pub const DEFAULT_CONNECTION_ID_INDEX: &str = "connectionId-index";
/// The default name of the optional GSI on `sub`.
pub const DEFAULT_SUB_INDEX: &str = "sub-index";

/// Our variable or its alias, whichever is set (blank counts as unset); both
/// set and not `same` is an error naming both, rather than a silent choice.
fn with_alias(
    (ours, our_value): (&str, Option<&str>),
    (alias, alias_value): (&str, Option<&str>),
    same: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<Option<String>> {
    match (non_empty(our_value), non_empty(alias_value)) {
        (Some(a), Some(b)) if !same(a, b) => anyhow::bail!(
            "{ours} is {a:?} but its alias {alias} is {b:?}: set one of them, or both alike"
        ),
        (Some(value), _) | (None, Some(value)) => Ok(Some(value.to_owned())),
        (None, None) => Ok(None),
    }
}

/// The table's name, also when given as its ARN
/// (`arn:aws:dynamodb:eu-west-1:123456789012:table/NAME`).
fn table_name_of(table: &str) -> &str {
    table
        .strip_prefix("arn:")
        .and_then(|arn| arn.split_once(":table/"))
        .map_or(table, |(_, name)| name)
}

/// A table ARN is passed to DynamoDB as the table name (it accepts both); it
/// must be a DynamoDB table's ARN, in the configured region.
fn check_table_arn(table: &str, region: Option<&str>) -> anyhow::Result<()> {
    let Some(arn) = table.strip_prefix("arn:") else {
        return Ok(());
    };
    let parts: Vec<&str> = arn.splitn(5, ':').collect();
    let well_formed = matches!(
        parts.as_slice(),
        [partition, "dynamodb", arn_region, account, resource]
            if !partition.is_empty() && !arn_region.is_empty() && !account.is_empty()
                && resource.strip_prefix("table/").is_some_and(|name| !name.is_empty() && !name.contains('/'))
    );
    if !well_formed {
        anyhow::bail!(
            "the table {table:?} (TABLE_NAME or {TABLE_NAME_ALIAS}) is not a DynamoDB table ARN \
             of the form arn:aws:dynamodb:<region>:<account>:table/<name>"
        );
    }
    if let Some(region) = region
        && parts[2] != region
    {
        anyhow::bail!(
            "the table {table:?} (TABLE_NAME or {TABLE_NAME_ALIAS}) is in region {}, but \
             AWS_REGION is {region}",
            parts[2]
        );
    }
    Ok(())
}

impl ServeArgs {
    /// The self-hosted endpoint's bounds.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: self.http_header_timeout.into(),
            max_connections: self.max_connections,
        }
    }

    pub fn socket_limits(&self) -> SocketLimits {
        SocketLimits {
            max_connections: self.max_websockets.max(1),
            max_per_user: self.max_websockets_per_user.max(1),
            send_queue_bytes: usize::try_from(self.ws_send_queue_bytes).unwrap_or(usize::MAX),
            idle_timeout: self.ws_idle_timeout.into(),
            max_age: self.ws_max_age.into(),
            ping_interval: self.ws_ping_interval.into(),
            auth_grace: Duration::from_secs(self.auth_grace_seconds),
            ..SocketLimits::default()
        }
    }
}

/// `gitgazer-ws.cwasm` next to the running executable (how the Lambda zip
/// ships it beside `bootstrap`).
pub fn precompiled_beside_executable() -> Option<PathBuf> {
    let path = std::env::current_exe()
        .ok()?
        .parent()?
        .join(PRECOMPILED_FILE_NAME);
    path.exists().then_some(path)
}

/// The precompiled component's file name beside the executable.
pub const PRECOMPILED_FILE_NAME: &str = "gitgazer-ws.cwasm";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cognito_mode_names_the_missing_variable() {
        let cli = Cli::try_parse_from([
            "gitgazer-ws",
            "--user-pool-id",
            "eu-west-1_abc",
            "--region",
            "eu-west-1",
            "serve",
        ])
        .unwrap();
        let err = cli.global.token_mode().unwrap_err().to_string();
        assert!(err.contains("COGNITO_CLIENT_ID"), "{err}");
    }

    /// GlobalArgs from flags (env variables of the test process play no part:
    /// the aliases are read through the given map).
    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["gitgazer-ws"];
        argv.extend_from_slice(args);
        argv.push("lambda");
        Cli::try_parse_from(argv).unwrap().global
    }

    fn table_options(
        args: &[&str],
        aliases: &[(&str, &str)],
    ) -> anyhow::Result<Option<(String, String)>> {
        let env = |name: &str| {
            aliases
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        Ok(global(args)
            .dynamodb_options_with(env)?
            .map(|o| (o.table, o.connection_id_index)))
    }

    #[test]
    fn gitgazers_variable_names_are_aliases_and_a_table_arn_is_a_table_name() {
        let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/connections";
        let pair = |t: &str, i: &str| Some((t.to_owned(), i.to_owned()));
        assert_eq!(table_options(&[], &[]).unwrap(), None);
        assert_eq!(
            table_options(&["--table-name", "t"], &[]).unwrap(),
            pair("t", "connectionId-index")
        );
        // GitGazer's names alone.
        assert_eq!(
            table_options(
                &["--region", "eu-west-1"],
                &[
                    (TABLE_NAME_ALIAS, arn),
                    (CONNECTION_ID_INDEX_ALIAS, "by-connection")
                ]
            )
            .unwrap(),
            pair(arn, "by-connection")
        );
        // Both names, alike (an ARN and its table's name are alike).
        assert_eq!(
            table_options(
                &["--table-name", "connections", "--connection-id-index", "ix"],
                &[(TABLE_NAME_ALIAS, arn), (CONNECTION_ID_INDEX_ALIAS, "ix")]
            )
            .unwrap(),
            pair("connections", "ix")
        );
        // Both names, different: an error naming both.
        let err = table_options(&["--table-name", "other"], &[(TABLE_NAME_ALIAS, arn)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TABLE_NAME") && err.contains(TABLE_NAME_ALIAS) && err.contains("other"),
            "{err}"
        );
        let err = table_options(
            &["--table-name", "t", "--connection-id-index", "a"],
            &[(CONNECTION_ID_INDEX_ALIAS, "b")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX")
                && err.contains(CONNECTION_ID_INDEX_ALIAS),
            "{err}"
        );
        // A blank alias counts as unset.
        assert_eq!(
            table_options(&["--table-name", "t"], &[(TABLE_NAME_ALIAS, " ")]).unwrap(),
            pair("t", "connectionId-index")
        );
        // An ARN must be a DynamoDB table's, in AWS_REGION.
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/t/index/x",
            "arn:aws:dynamodb:eu-west-1::table/t",
        ] {
            let err = table_options(&["--table-name", bad], &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("arn:aws:dynamodb:<region>"), "{bad}: {err}");
        }
        let err = table_options(&["--region", "us-east-1", "--table-name", arn], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_REGION is us-east-1"), "{err}");
    }

    #[test]
    fn socket_limits_parse_durations_and_refuse_zero_or_too_small() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["gitgazer-ws", "serve"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Some(Command::Serve(serve)) => serve,
                _ => unreachable!(),
            })
        };
        let defaults = serve(&[]).unwrap();
        assert_eq!(defaults.connection_limits(), ConnectionLimits::default());
        let set = serve(&["--max-connections", "50", "--http-header-timeout", "2s"]).unwrap();
        assert_eq!(
            set.connection_limits(),
            ConnectionLimits {
                header_timeout: Duration::from_secs(2),
                max_connections: 50
            }
        );
        let limits = defaults.socket_limits();
        assert_eq!(limits.idle_timeout, Duration::from_secs(600));
        assert_eq!(limits.max_age, Duration::from_secs(7200));
        assert_eq!(limits.ping_interval, Duration::from_secs(30));
        assert_eq!(defaults.ws_send_queue_bytes, 1024 * 1024);
        assert_eq!(limits.auth_grace, Duration::from_secs(30));
        let grace = serve(&["--auth-grace-seconds", "2"])
            .unwrap()
            .socket_limits();
        assert_eq!(grace.auth_grace, Duration::from_secs(2));
        let set = serve(&["--ws-idle-timeout", "1m 30s", "--ws-ping-interval", "500ms"]).unwrap();
        assert_eq!(*set.ws_idle_timeout, Duration::from_secs(90));
        assert_eq!(*set.ws_ping_interval, Duration::from_millis(500));
        for (flag, value, says) in [
            ("--ws-ping-interval", "0s", "more than zero"),
            ("--ws-max-age", "soon", "e.g. 30s"),
            ("--ws-max-age", "500000000y", "at most 366 days"),
            ("--ws-send-queue-bytes", "1000", "131136"),
            ("--http-header-timeout", "0s", "more than zero"),
            ("--max-connections", "0", "1.."),
        ] {
            let err = serve(&[flag, value]).unwrap_err().to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }
}
