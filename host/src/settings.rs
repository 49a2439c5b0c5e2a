//! What the policy checks tokens against, and the rules that turn an
//! operator's configuration into it: the token mode (dev or a Cognito user
//! pool), the Cognito naming rules, and the defaults of the policy settings.

use crate::wit::types::Settings;

/// Records outlive the connection by a little: API Gateway closes a
/// WebSocket after 2 h at most; 5 min more covers clock skew.
pub const DEFAULT_RECORD_TTL_SECONDS: u32 = 2 * 3600 + 5 * 60;
/// Clock skew tolerated on exp, nbf and iat: none unless configured.
pub const DEFAULT_LEEWAY_SECONDS: u32 = 0;

/// The `iss` of dev tokens (`.invalid`: it can never be a real issuer).
pub const DEV_ISSUER: &str = "https://cognito-idp.dev.invalid/dev_gitgazer";
/// The `aud` of dev tokens.
pub const DEV_CLIENT_ID: &str = "gitgazer-ws-dev-client";

/// Where tokens come from and what they must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenMode {
    /// A key made at start; tokens from `/dev/token`.
    Dev,
    /// A Cognito user pool.
    Cognito {
        region: String,
        user_pool_id: String,
        /// The app clients whose tokens are accepted (at least one).
        client_ids: Vec<String>,
        jwks_url: String,
    },
}

impl TokenMode {
    /// Dev mode when no user pool is configured; else every Cognito setting
    /// must be present and well-formed (`jwks_url` defaults to the pool's).
    pub fn new(
        user_pool_id: Option<&str>,
        region: Option<&str>,
        client_id: Option<&str>,
        jwks_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let Some(user_pool_id) = non_empty(user_pool_id) else {
            return Ok(TokenMode::Dev);
        };
        let region = non_empty(region).ok_or_else(|| {
            anyhow::anyhow!("AWS_REGION (--region) is required when COGNITO_USER_POOL_ID is set")
        })?;
        let client_ids = non_empty(client_id).ok_or_else(|| {
            anyhow::anyhow!(
                "COGNITO_CLIENT_ID (--client-id) is required when COGNITO_USER_POOL_ID is set"
            )
        })?;
        let client_ids = parse_client_ids(client_ids)?;
        validate_user_pool_id(user_pool_id, region)?;
        let jwks_url = non_empty(jwks_url)
            .map(str::to_owned)
            .unwrap_or_else(|| cognito_jwks_url(region, user_pool_id));
        Ok(TokenMode::Cognito {
            region: region.into(),
            user_pool_id: user_pool_id.into(),
            client_ids,
            jwks_url,
        })
    }

    /// The settings the policy verifies this mode's tokens under.
    pub fn policy_settings(&self, leeway_seconds: u32, record_ttl_seconds: u32) -> Settings {
        let (issuer, audiences) = match self {
            TokenMode::Dev => (DEV_ISSUER.to_owned(), vec![DEV_CLIENT_ID.to_owned()]),
            TokenMode::Cognito {
                region,
                user_pool_id,
                client_ids,
                ..
            } => (cognito_issuer(region, user_pool_id), client_ids.clone()),
        };
        Settings {
            issuer,
            audiences,
            leeway_seconds,
            record_ttl_seconds,
        }
    }
}

/// Dev tokens' settings with the defaults: what the benchmarks and
/// examples verify under.
pub fn dev_policy_settings() -> Settings {
    TokenMode::Dev.policy_settings(DEFAULT_LEEWAY_SECONDS, DEFAULT_RECORD_TTL_SECONDS)
}

pub fn cognito_issuer(region: &str, user_pool_id: &str) -> String {
    format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}")
}

pub fn cognito_jwks_url(region: &str, user_pool_id: &str) -> String {
    format!(
        "{}/.well-known/jwks.json",
        cognito_issuer(region, user_pool_id)
    )
}

/// `COGNITO_CLIENT_ID`: one app client id, or several separated by commas
/// (a web and a mobile client of one pool); blanks around each are trimmed.
/// An empty element (`a,,b`, a trailing comma) is refused: it is a typo, and
/// silently dropping it could hide a missing id.
pub fn parse_client_ids(list: &str) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for (position, id) in list.split(',').map(str::trim).enumerate() {
        if id.is_empty() {
            anyhow::bail!(
                "COGNITO_CLIENT_ID (--client-id) {list:?}: element {} is empty; give app \
                 client ids separated by single commas, e.g. webclientid,mobileclientid",
                position + 1
            );
        }
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// `<region>_<id>`, the region being the configured one: a pool id from
/// another region would make every token's issuer mismatch.
pub fn validate_user_pool_id(user_pool_id: &str, region: &str) -> anyhow::Result<()> {
    let well_formed = user_pool_id
        .split_once('_')
        .is_some_and(|(pool_region, id)| {
            is_region(pool_region)
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if !well_formed {
        anyhow::bail!(
            "COGNITO_USER_POOL_ID {user_pool_id:?} is not a user pool id of the form \
             <region>_<id>, e.g. eu-west-1_AbCdEf123"
        );
    }
    if !is_region(region) {
        anyhow::bail!("AWS_REGION {region:?} is not a region name such as eu-west-1");
    }
    let pool_region = user_pool_id.split('_').next().unwrap_or_default();
    if pool_region != region {
        anyhow::bail!(
            "COGNITO_USER_POOL_ID {user_pool_id:?} belongs to region {pool_region}, \
             but AWS_REGION is {region}"
        );
    }
    Ok(())
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`: lowercase words and a number.
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// The trimmed value, unless empty.
pub fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_a_comma_separated_list_without_empty_elements() {
        assert_eq!(parse_client_ids("web").unwrap(), ["web"]);
        assert_eq!(
            parse_client_ids(" web , mobile,web").unwrap(),
            ["web", "mobile"]
        );
        for bad in ["a,,b", "a,", ",a", "a, ,b", ","] {
            let err = parse_client_ids(bad).unwrap_err().to_string();
            assert!(
                err.contains("COGNITO_CLIENT_ID") && err.contains("empty"),
                "{bad}: {err}"
            );
        }
        let mode = TokenMode::new(
            Some("eu-west-1_abc"),
            Some("eu-west-1"),
            Some("web,mobile"),
            None,
        )
        .unwrap();
        assert_eq!(
            mode.policy_settings(0, 60).audiences,
            ["web".to_owned(), "mobile".to_owned()]
        );
        let err = TokenMode::new(Some("eu-west-1_abc"), Some("eu-west-1"), Some("web,"), None)
            .unwrap_err();
        assert!(err.to_string().contains("element 2 is empty"), "{err}");
    }

    #[test]
    fn user_pool_ids_are_checked_against_the_region() {
        assert!(validate_user_pool_id("eu-west-1_AbC123", "eu-west-1").is_ok());
        assert!(validate_user_pool_id("us-gov-west-1_x9", "us-gov-west-1").is_ok());
        for bad in [
            "",
            "eu-west-1",
            "eu-west-1_",
            "_abc",
            "EU-west-1_abc",
            "eu-west-1_a-b",
        ] {
            let err = validate_user_pool_id(bad, "eu-west-1").unwrap_err();
            assert!(err.to_string().contains("<region>_<id>"), "{bad}: {err}");
        }
        let err = validate_user_pool_id("us-east-1_abc", "eu-west-1").unwrap_err();
        assert!(err.to_string().contains("AWS_REGION is eu-west-1"), "{err}");
    }
}
