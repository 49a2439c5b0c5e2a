//! [`ConnectionSender`] over the API Gateway Management API
//! (`POST {endpoint}/@connections/{connectionId}`), signed with SigV4 by
//! `aws-sdk-apigatewaymanagement`. On AWS the caller needs
//! `execute-api:ManageConnections` on the API's stage.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;

use super::{Closing, ConnectionSender, SendError, with_sources};

/// The Management API of one WebSocket API stage.
pub struct ManagementApi {
    client: Client,
    endpoint: String,
}

impl ManagementApi {
    /// `endpoint`: `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`
    /// (or a self-hosted gitgazer-ws). Credentials and region come from the
    /// standard AWS chain. The SDK does not retry: [`super::deliver`] does,
    /// with its own deadline per call.
    pub async fn connect(endpoint: &str, call_timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        let parsed = url::Url::parse(endpoint)
            .map_err(|e| anyhow::anyhow!("WEBSOCKET_API_ENDPOINT {endpoint:?}: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            anyhow::bail!("WEBSOCKET_API_ENDPOINT must be an http(s) URL, not {endpoint:?}");
        }
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_timeout(call_timeout)
                    .build(),
            )
            .load()
            .await;
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .build();
        Ok(Self {
            client: Client::from_conf(config),
            endpoint: endpoint.to_owned(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait::async_trait]
impl ConnectionSender for ManagementApi {
    async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError> {
        self.client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(message.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// A last `{"type":"close",…}` message (API Gateway has no close code
    /// of its own), then `DeleteConnection`.
    async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
        let message = Bytes::from_static(why.message().as_bytes());
        match self.post(connection_id, &message).await {
            Err(SendError::Gone) => return Err(SendError::Gone),
            Err(error) => {
                tracing::debug!(connection_id, ?error, "the close message did not arrive")
            }
            Ok(()) => {}
        }
        self.delete_connection(connection_id).await
    }
}

impl ManagementApi {
    /// `DeleteConnection`: closes a connection (API Gateway sends no close
    /// code of its own). Gone already counts as done.
    pub async fn delete_connection(&self, connection_id: &str) -> Result<(), SendError> {
        match self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service)) if service.raw().status().as_u16() == 410 => {
                Ok(())
            }
            Err(error) => Err(SendError::Failed(with_sources(&error))),
        }
    }
}

fn classify(error: SdkError<PostToConnectionError>) -> SendError {
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err() {
                PostToConnectionError::GoneException(_) => SendError::Gone,
                PostToConnectionError::ForbiddenException(_) => {
                    SendError::Forbidden(service.err().to_string())
                }
                PostToConnectionError::LimitExceededException(_) => {
                    SendError::Retryable(service.err().to_string())
                }
                _ => match status {
                    410 => SendError::Gone,
                    403 => SendError::Forbidden(format!("HTTP 403: {}", service.err())),
                    429 | 500..=599 => {
                        SendError::Retryable(format!("HTTP {status}: {}", service.err()))
                    }
                    _ => SendError::Failed(format!("HTTP {status}: {}", service.err())),
                },
            }
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            SendError::Unreachable(with_sources(&error))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SendError::Retryable(with_sources(&error))
        }
        _ => SendError::Failed(with_sources(&error)),
    }
}
