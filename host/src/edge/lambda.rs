//! The AWS Lambda entry: the same handler behind API Gateway WebSocket
//! (`$connect` / `$disconnect` routes, AWS_PROXY integration).
//!
//! The payload is taken as raw JSON and decoded here, so an event that does
//! not decode is answered 400 like any other bad event, instead of becoming
//! a runtime error. Start-up (config, clients, the precompiled component)
//! happens once per execution environment; a failure there is reported to
//! the Runtime API's `/init/error` with the message naming the problem.

use std::convert::Infallible;

use lambda_runtime::{LambdaEvent, service_fn};
use tracing::Instrument;

use super::events::{ProxyResponse, decode_event_value, handle_event};
use crate::clock::unix_now_millis;
use crate::service::Handler;
use crate::settings::TokenMode;
use crate::startup::{self, StartOptions};
use crate::telemetry::emf::{EmfOptions, EmfRecorder};

/// What the Lambda environment always sets, and `lambda_runtime` requires.
const REQUIRED_LAMBDA_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Runs the Runtime API loop until the environment is shut down.
/// `options`: the configuration, or why it is wrong (reported as an init
/// error like any other start-up failure).
pub async fn run(options: anyhow::Result<StartOptions>) -> anyhow::Result<()> {
    // lambda_runtime panics without these; say plainly what is missing.
    for variable in REQUIRED_LAMBDA_VARIABLES {
        if std::env::var_os(variable).is_none() {
            anyhow::bail!(
                "{variable} is not set: the Lambda entry runs inside AWS Lambda or a Runtime API \
                 emulator, which set {}",
                REQUIRED_LAMBDA_VARIABLES.join(", ")
            );
        }
    }
    let emf = match EmfOptions::from_env(
        std::env::var("METRICS_NAMESPACE").ok().as_deref(),
        std::env::var("METRICS_DIMENSIONS").ok().as_deref(),
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().as_deref(),
    )
    .and_then(EmfRecorder::install)
    {
        Ok(emf) => emf,
        Err(error) => {
            report_init_error(&format!("{error:#}")).await;
            return Err(error);
        }
    };
    let started = match async { startup::start(deployable(options?)?).await }.await {
        Ok(started) => started,
        Err(error) => {
            report_init_error(&format!("{error:#}")).await;
            return Err(error);
        }
    };
    let handler = started
        .handler
        .with_answer_endpoint(std::env::var("WEBSOCKET_API_ENDPOINT").ok());
    tracing::info!("Lambda runtime loop starting");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (handler, emf) = (handler.clone(), emf.clone());
        async move {
            let request_id = event.context.request_id.clone();
            let response = handle(&handler, event).await;
            // This invocation's metrics, one EMF line on stdout.
            if let Some(document) = emf.flush(unix_now_millis(), &request_id) {
                println!("{document}");
            }
            Ok::<_, Infallible>(response)
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

/// A Lambda function serves real users: a missing user pool would mean dev
/// mode (a random key nobody's token matches) and a missing table would keep
/// records in the memory of one execution environment, lost to every other.
/// Either is a mistyped deployment, so it fails the init, naming the variable.
fn deployable(options: StartOptions) -> anyhow::Result<StartOptions> {
    if options.mode == TokenMode::Dev {
        anyhow::bail!(
            "COGNITO_USER_POOL_ID is not set: the Lambda entry verifies the user pool's tokens \
             (dev mode is for `gitgazer-ws serve` only)"
        );
    }
    if options.table.is_none() {
        anyhow::bail!(
            "TABLE_NAME is not set: the Lambda entry keeps connection records in DynamoDB \
             (memory would hold them in one execution environment only)"
        );
    }
    Ok(options)
}

/// One invocation: decode, dispatch, answer. Never fails: every problem is
/// a proxy response (400 for a bad event, 500 for a failure inside).
pub async fn handle(handler: &Handler, event: LambdaEvent<serde_json::Value>) -> ProxyResponse {
    let request_id = event.context.request_id;
    let decoded = decode_event_value(event.payload);
    let connection_id = decoded
        .as_ref()
        .ok()
        .and_then(|e| e.request_context.connection_id.clone())
        .unwrap_or_default();
    // Every log line of this invocation carries both ids; never the token.
    let span = tracing::info_span!(
        "invocation",
        request_id = request_id.as_str(),
        connection_id = connection_id.as_str()
    );
    async {
        match decoded {
            Ok(event) => handle_event(handler, &event, Some(&request_id)).await,
            Err(response) => {
                tracing::warn!(reason = response.body.as_str(), "event did not decode");
                response
            }
        }
    }
    .instrument(span)
    .await
}

/// Tells the Runtime API why the environment could not start, so the error
/// shows in the function's invocation result, not only in its logs.
async fn report_init_error(message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({ "errorType": "Runtime.InitError", "errorMessage": message });
    let result = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .body(body.to_string())
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "could not report the init error to the Runtime API");
    }
}
