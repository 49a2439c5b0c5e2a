//! The `gitgazer-ws` binary: parses the command line and runs one command.

use std::io::{IsTerminal, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gitgazer_ws::cli::{
    self, Cli, Command, DeliverArgs, EvictArgs, GlobalArgs, LogFormat, ServeArgs, TableCommand,
};
use gitgazer_ws::clock::unix_now;
use gitgazer_ws::delivery::nodes::Node;
use gitgazer_ws::delivery::{self, DeliveryOptions, ManagementApi, Route, Routes};
use gitgazer_ws::edge::http::{AppState, management_app, public_app};
use gitgazer_ws::edge::server::{self, ConnectionLimits};
use gitgazer_ws::edge::websocket::Sockets;
use gitgazer_ws::edge::{events, lambda};
use gitgazer_ws::policy::engine;
use gitgazer_ws::service::{Handler, new_request_id};
use gitgazer_ws::settings::TokenMode;
use gitgazer_ws::store::{DynamoDbStore, MemoryStore};
use gitgazer_ws::{startup, telemetry};
use serde_json::json;
use tracing_subscriber::EnvFilter;

/// Exit codes of `verify-token` (and of any command's usage error).
const EXIT_INVALID: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let lambda = matches!(cli.command, Some(Command::Lambda))
        || (cli.command.is_none() && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some());
    // A one-shot command's output is its answer; its log says only what
    // went wrong, unless RUST_LOG asks for more.
    let one_shot = !lambda && !matches!(cli.command, Some(Command::Serve(_)));
    init_logging(
        cli.global.log_format,
        lambda,
        if one_shot { "warn" } else { "info" },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            lambda::run(cli.global.start_options()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    match command {
        Command::Lambda => {
            lambda::run(cli.global.start_options()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(&cli.global, &args).await,
        Command::VerifyToken(args) => {
            verify_token(&cli.global, &args.jwks, args.now, &args.token).await
        }
        Command::HandleEvent(args) => handle_event(&cli.global, args.file.as_deref()).await,
        Command::Table(TableCommand::Create(args)) => {
            let options = cli
                .global
                .dynamodb_options()?
                .ok_or_else(|| anyhow::anyhow!("table create needs TABLE_NAME (--table-name)"))?;
            let table = options.table.clone();
            DynamoDbStore::connect(options)
                .await
                .create_table(args.with_sub_index)
                .await?;
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliver(args) => deliver(&cli.global, &args).await,
        Command::Evict(args) => evict(&cli.global, &args).await,
        Command::Compile(args) => {
            let options = cli.global.engine_options();
            let built = if args.portable || args.target.is_some() {
                engine::build_portable_engine(&options, args.target.as_deref())?
            } else {
                engine::build_engine(&options)?
            };
            engine::precompile_to(&built, &options, &args.output)?;
            println!("{}", args.output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn deliver(global: &GlobalArgs, args: &DeliverArgs) -> anyhow::Result<ExitCode> {
    let message = read_input(args.message.as_deref())?;
    let table = global.dynamodb_options()?.ok_or_else(|| {
        anyhow::anyhow!("deliver reads the records from DynamoDB: set TABLE_NAME (--table-name)")
    })?;
    let options = DeliveryOptions {
        concurrency: args.concurrency.max(1),
        auth_grace: std::time::Duration::from_secs(args.auth_grace_seconds),
        ..DeliveryOptions::default()
    };
    let routes = one_shot_routes(
        options.call_timeout,
        args.endpoint.as_deref(),
        args.management_token.as_deref(),
    )
    .await?;
    let store = DynamoDbStore::connect(table).await;
    let report = delivery::deliver(
        Arc::new(store),
        &routes,
        &args.integration,
        message.into(),
        unix_now(),
        &options,
    )
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

/// Where a one-shot command (`deliver`, `evict`) reaches connections: by
/// each record's endpoint, else `endpoint` (WEBSOCKET_API_ENDPOINT).
async fn one_shot_routes(
    call_timeout: std::time::Duration,
    endpoint: Option<&str>,
    management_token: Option<&str>,
) -> anyhow::Result<Routes> {
    let mut routes = Routes::new(call_timeout, cli::management_token(management_token)?)?;
    if let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) {
        routes = routes.with_fallback(Route {
            sender: Arc::new(ManagementApi::connect(endpoint, call_timeout).await?),
            gone_is_certain: false,
            immediate: false,
        });
    }
    Ok(routes)
}

/// `evict`: the revocation, the records, the connections; the counts as
/// JSON.
async fn evict(global: &GlobalArgs, args: &EvictArgs) -> anyhow::Result<ExitCode> {
    let table = global.dynamodb_options()?.ok_or_else(|| {
        anyhow::anyhow!("evict writes the revocation to DynamoDB: set TABLE_NAME (--table-name)")
    })?;
    let call_timeout = DeliveryOptions::default().call_timeout;
    let routes = one_shot_routes(
        call_timeout,
        args.endpoint.as_deref(),
        args.management_token.as_deref(),
    )
    .await?;
    let index = table.sub_index.clone();
    let store = DynamoDbStore::connect(table).await;
    let eviction = delivery::evict::Eviction {
        sub: &args.sub,
        integrations: &args.integrations,
        now: unix_now(),
        revocation_ttl: std::time::Duration::from_secs(args.revocation_ttl_seconds),
        call_timeout,
    };
    let report = match delivery::evict::evict(&store, &routes, &eviction).await {
        Ok(report) => report,
        Err(delivery::evict::EvictError::Lookup(error)) if args.integrations.is_empty() => {
            anyhow::bail!(
                "{}; without --integration, evict finds the user's records through the \
                 table's index {index:?} on sub (`table create --with-sub-index`, or the \
                 template's SubIndex parameter): create it, or name the integrations with \
                 --integration",
                delivery::evict::EvictError::Lookup(error)
            )
        }
        Err(error) => return Err(error.into()),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

/// A file's bytes, or standard input's for `-` or no path.
fn read_input(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
        }
        _ => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            Ok(input)
        }
    }
}

async fn serve(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    // First, so that what start-up records (the key set) is counted.
    let metrics = telemetry::prometheus::install()?;
    let started = startup::start(global.start_options()?).await?;
    let dev = started.mode == TokenMode::Dev;
    // Dev mode mints tokens for anyone who asks: loopback only, both ports.
    let loopback_in_dev = |address: SocketAddr, what: &str| {
        if dev && !address.ip().is_loopback() {
            tracing::warn!(%address, "dev mode binds 127.0.0.1 only; ignoring the requested {what} address");
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        } else {
            address
        }
    };
    let public = bind(loopback_in_dev(
        SocketAddr::new(args.bind, args.port),
        "public",
    ))
    .await?;
    let management = bind(loopback_in_dev(args.management_bind, "management")).await?;
    let address = public.local_addr()?;
    if dev {
        tracing::warn!(
            "dev mode is ON: tokens are minted at http://{address}/dev/token and verified \
             against a key made at start; set COGNITO_USER_POOL_ID for real tokens"
        );
    }
    tracing::info!(%address, "listening");
    tracing::info!(address = %management.local_addr()?, "management listening");
    let node = Arc::new(Node::new(
        args.advertise_url.as_deref(),
        management.local_addr()?,
        cli::management_token(args.management_token.as_deref())?,
    )?);
    tracing::info!(
        endpoint = node.endpoint(),
        "this node's sockets are reached at"
    );
    let sockets = Sockets::new(args.socket_limits());
    let call_timeout = DeliveryOptions::default().call_timeout;
    let fallback = match args
        .websocket_api_endpoint
        .as_deref()
        .filter(|endpoint| !endpoint.is_empty())
    {
        Some(endpoint) => Route {
            sender: Arc::new(ManagementApi::connect(endpoint, call_timeout).await?),
            gone_is_certain: false,
            immediate: false,
        },
        None => Route {
            sender: sockets.clone(),
            gone_is_certain: true,
            immediate: true,
        },
    };
    let routes = Routes::new(call_timeout, node.token().cloned())?
        .with_local(node.endpoint(), sockets.clone())
        .with_fallback(fallback);
    let state = AppState {
        handler: started.handler,
        dev: started.dev,
        sockets: sockets.clone(),
        node,
        routes: Arc::new(routes),
        metrics: Some(metrics),
    };
    // On a signal: stop accepting on both listeners, let in-flight requests
    // finish, but no longer than the grace period.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let grace = std::time::Duration::from_secs(args.shutdown_grace_seconds);
    let limits = args.connection_limits();
    let public = server::serve(
        public,
        public_app(state.clone()),
        ConnectionLimits {
            max_connections: server::connection_budget(limits.max_connections),
            ..limits
        },
        stopping_rx.clone(),
    );
    let management = server::serve(
        management,
        management_app(state),
        ConnectionLimits {
            max_connections: server::MANAGEMENT_MAX_CONNECTIONS,
            ..limits
        },
        stopping_rx,
    );
    let closing = sockets.clone();
    let signalled = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
        // Upgraded sockets are not requests the server waits for: close them
        // now, so their DISCONNECTs run while requests drain.
        tokio::spawn(async move { closing.close_all(grace).await });
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(public, management) } => {}
        () = signalled => {
            tracing::warn!(?grace, "in-flight requests still running after the grace period; exiting");
        }
    }
    // Wait for the sockets' DISCONNECTs (bounded): their records must go.
    sockets.close_all(grace).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("binding {address}: {e}"))
}

/// Ctrl-C or SIGTERM: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn verify_token(
    global: &GlobalArgs,
    jwks: &str,
    now: Option<u64>,
    token: &str,
) -> anyhow::Result<ExitCode> {
    let mode = global.token_mode()?;
    if mode == TokenMode::Dev {
        anyhow::bail!("verify-token needs --region, --user-pool-id and --client-id");
    }
    let token = if token == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        input.trim().to_owned()
    } else {
        token.to_owned()
    };
    let keys = startup::key_set_source(jwks)?;
    let runtime = startup::load_runtime(global.engine_options()).await?;
    let handler = Handler::new(
        runtime,
        Arc::new(MemoryStore::new()),
        keys,
        global.policy_settings(&mode),
    );
    let verdict = handler
        .verify_token(&token, now.unwrap_or_else(unix_now))
        .await?;
    let (line, code) = match verdict {
        Ok(identity) => (
            json!({ "valid": true, "sub": identity.sub, "groups": identity.groups }),
            ExitCode::SUCCESS,
        ),
        Err(rejection) => (
            json!({ "valid": false, "reason": rejection.name() }),
            ExitCode::from(EXIT_INVALID),
        ),
    };
    println!("{line}");
    Ok(code)
}

async fn handle_event(
    global: &GlobalArgs,
    file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let bytes = read_input(file)?;
    let started = startup::start(global.start_options()?).await?;
    let request_id = new_request_id();
    let response = events::handle_event_json(&started.handler, &bytes, Some(&request_id)).await;
    println!("{}", serde_json::to_string(&response)?);
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr; `RUST_LOG` sets the filter (default `default_level`).
/// Under Lambda: JSON lines, and `AWS_LAMBDA_LOG_LEVEL` (the function's
/// log-level setting) wins over `RUST_LOG`. Colours only on a terminal, and
/// never with `NO_COLOR` set (no-color.org): escape codes in a file or a log
/// pipeline are noise, and worse, they can hide text.
fn init_logging(format: LogFormat, lambda: bool, default_level: &str) {
    let lambda_level = lambda
        .then(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .flatten()
        .map(|level| level.to_lowercase());
    let filter = match lambda_level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(default_level)),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if lambda || format == LogFormat::Json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}
