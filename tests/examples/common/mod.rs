//! Shared by the cold-start benchmarks (`mod common;`): the CONNECT event
//! both measure.

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::unix_now;
use serde_json::{Value, json};

/// A CONNECT event with an id token from `signer` for the pool
/// `region`/`pool` and app client `client`, valid for an hour, in the group
/// `acme`.
pub fn connect_event(signer: &DevSigner, region: &str, pool: &str, client: &str) -> Value {
    let now = unix_now();
    let token = signer.sign(&json!({
        "sub": "cold-start-user",
        "iss": format!("https://cognito-idp.{region}.amazonaws.com/{pool}"),
        "aud": client, "token_use": "id", "iat": now, "exp": now + 3600,
        "cognito:groups": ["acme"],
    }));
    json!({
        "requestContext": {
            "eventType": "CONNECT", "routeKey": "$connect", "connectionId": "cold=",
            "connectedAt": 0, "requestTimeEpoch": 0,
        },
        "queryStringParameters": { "idToken": token },
    })
}
