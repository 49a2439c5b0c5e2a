//! Dev mode: a signing key made at start, its key set, and id tokens minted
//! on request, so the whole flow runs without a Cognito user pool. The
//! tokens go through the same guest verification as real ones; only the
//! issuer and audience differ.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::json;
use sha2::Sha256;

use crate::settings::{DEV_CLIENT_ID, DEV_ISSUER};

/// Cognito's keys are RSA-2048; so is the dev key.
const DEV_KEY_BITS: usize = 2048;

/// What a dev token says.
#[derive(Debug, Clone)]
pub struct DevClaims {
    pub sub: String,
    pub groups: Vec<String>,
    pub ttl_seconds: u64,
}

/// A signing key with its public key set.
pub struct DevSigner {
    kid: String,
    signing_key: SigningKey<Sha256>,
    public_key: rsa::PublicKey,
    jwks: String,
}

impl DevSigner {
    /// Makes a fresh RSA-2048 key (≈0.1–1 s in a release build).
    pub fn generate() -> anyhow::Result<Self> {
        let private_key = rsa::PrivateKey::new(&mut getrandom::SysRng, DEV_KEY_BITS)?;
        let public_key = private_key.to_public_key();
        let kid = format!("dev-{}", uuid::Uuid::new_v4().simple());
        let jwks = json!({
            "keys": [{
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(public_key.n_bytes()),
                "e": URL_SAFE_NO_PAD.encode(public_key.e_bytes()),
            }]
        })
        .to_string();
        Ok(Self {
            kid,
            signing_key: SigningKey::<Sha256>::new(private_key),
            public_key,
            jwks,
        })
    }

    /// The public key (benchmarks verify natively with it for reference).
    pub fn public_key(&self) -> &rsa::PublicKey {
        &self.public_key
    }

    /// The key id, as in the key set and in the tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set (JWKS JSON).
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// A Cognito-shaped id token for the dev issuer and audience.
    pub fn mint(&self, claims: &DevClaims, now: u64) -> String {
        let mut payload = json!({
            "sub": claims.sub,
            "iss": DEV_ISSUER,
            "aud": DEV_CLIENT_ID,
            "token_use": "id",
            "auth_time": now,
            "iat": now,
            "exp": now + claims.ttl_seconds,
            "cognito:username": claims.sub,
        });
        if !claims.groups.is_empty() {
            payload["cognito:groups"] = json!(claims.groups);
        }
        self.sign(&payload)
    }

    /// Signs any claim set with this key (RS256, this key's kid). Tests use
    /// it for tokens of other issuers and for deliberately wrong claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({ "alg": "RS256", "kid": self.kid, "typ": "JWT" });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signing_key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}
