//! Validation of a Cognito id token's claims, run only after the signature
//! has been verified.
//!
//! Order: first every registered claim that is present must have its type
//! (`bad-claims`), and `exp` and `sub` must be present; then `iss`, `aud`,
//! `token_use`, and the time window, each with its own rejection.

use crate::prelude::*;

use crate::json::{Number, Object, Value};
use crate::types::{Identity, Rejection, Settings, Verified};

/// Claims that must be strings when present.
const STRING_CLAIMS: [&str; 5] = ["sub", "jti", "iss", "token_use", "scope"];
/// Claims that must be NumericDates when present (RFC 7519 §2).
const TIME_CLAIMS: [&str; 4] = ["exp", "nbf", "iat", "auth_time"];

/// The claim carrying the user's groups, i.e. GitGazer integrations.
pub const GROUPS_CLAIM: &str = "cognito:groups";

/// A NumericDate: seconds since the epoch, non-negative and finite.
///
/// Fractions are accepted (RFC 7519 allows them; Cognito emits integers) and
/// compared exactly against the integral `now`: `exp` 100.5 is still valid at
/// `now` 100 and no longer at 101.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NumericDate {
    Whole(u64),
    Fraction(f64),
}

impl NumericDate {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Number(Number::Unsigned(seconds)) => Some(NumericDate::Whole(*seconds)),
            Value::Number(Number::Float(seconds)) if seconds.is_finite() && *seconds >= 0.0 => {
                Some(NumericDate::Fraction(*seconds))
            }
            _ => None,
        }
    }

    /// Whether `instant < self + leeway`.
    fn is_after(self, instant: u64, leeway: u64) -> bool {
        match self {
            NumericDate::Whole(t) => u128::from(instant) < u128::from(t) + u128::from(leeway),
            // f64 is exact for every second up to 2^53 (year 285 million).
            NumericDate::Fraction(t) => (instant as f64) < t + leeway as f64,
        }
    }

    /// Whole seconds, rounded down (`exp` 100.5 gives 100).
    fn whole_seconds(self) -> u64 {
        match self {
            NumericDate::Whole(t) => t,
            // `as` saturates; the value is finite and non-negative.
            NumericDate::Fraction(t) => t as u64,
        }
    }

    /// Whether `self <= instant + leeway`.
    fn is_not_after(self, instant: u64, leeway: u64) -> bool {
        match self {
            NumericDate::Whole(t) => u128::from(t) <= u128::from(instant) + u128::from(leeway),
            NumericDate::Fraction(t) => t <= instant as f64 + leeway as f64,
        }
    }
}

/// Validates the claims of a signature-checked token at `now` and returns the
/// identity it carries.
pub fn validate(claims: &Object, now: u64, settings: &Settings) -> Result<Identity, Rejection> {
    validate_full(claims, now, settings).map(|verified| verified.identity)
}

/// [`validate`], with the token's `exp` and `iat` (whole seconds, rounded
/// down) beside the identity.
pub fn validate_full(
    claims: &Object,
    now: u64,
    settings: &Settings,
) -> Result<Verified, Rejection> {
    // 1. Types of registered claims; presence of exp and sub.
    for name in STRING_CLAIMS {
        if claims.get(name).is_some_and(|v| v.as_str().is_none()) {
            return Err(Rejection::BadClaims);
        }
    }
    let mut dates = [None; TIME_CLAIMS.len()];
    for (slot, name) in dates.iter_mut().zip(TIME_CLAIMS) {
        if let Some(value) = claims.get(name) {
            *slot = Some(NumericDate::from_value(value).ok_or(Rejection::BadClaims)?);
        }
    }
    let [exp, nbf, iat, _auth_time] = dates;
    let exp = exp.ok_or(Rejection::BadClaims)?;
    let sub = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub,
        _ => return Err(Rejection::BadClaims),
    };
    // `aud` is a string or, per RFC 7519, an array of strings; an id token
    // carries exactly one audience, so an array is refused below.
    let aud = claims.get("aud");
    if let Some(aud) = aud
        && !matches!(aud, Value::String(_) | Value::Array(_))
    {
        return Err(Rejection::BadClaims);
    }

    // 2. Who issued it, for whom, and for what.
    if claims.get("iss").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err(Rejection::WrongIssuer);
    }
    let aud = aud.and_then(Value::as_str);
    if !settings
        .audiences
        .iter()
        .any(|accepted| Some(accepted.as_str()) == aud)
    {
        return Err(Rejection::WrongAudience);
    }
    if claims.get("token_use").and_then(Value::as_str) != Some("id") {
        return Err(Rejection::WrongTokenUse);
    }

    // 3. When: valid while now < exp + leeway; nbf and iat not in the future.
    let leeway = u64::from(settings.leeway_seconds);
    if !exp.is_after(now, leeway) {
        return Err(Rejection::Expired);
    }
    for date in [nbf, iat].into_iter().flatten() {
        if !date.is_not_after(now, leeway) {
            return Err(Rejection::NotYetValid);
        }
    }

    Ok(Verified {
        identity: Identity {
            sub: sub.to_owned(),
            groups: groups(claims),
        },
        expires_at: exp.whole_seconds(),
        issued_at: iat.map(NumericDate::whole_seconds),
    })
}

/// The `sub` and `iat` (whole seconds, rounded down) of claims verified
/// earlier, read without checking anything else: the current token of a
/// connection, whose time window may have passed.
pub fn peek(claims: &Object) -> Option<(String, Option<u64>)> {
    let sub = claims.get("sub").and_then(Value::as_str)?.to_owned();
    let iat = match claims.get("iat") {
        None => None,
        Some(value) => Some(NumericDate::from_value(value)?.whole_seconds()),
    };
    Some((sub, iat))
}

/// `cognito:groups`: an array of group names ([`is_group_name`]),
/// duplicates collapsed in order of first appearance. Anything else (absent,
/// not an array, holding a non-string or a string that is no group name)
/// means no groups at all: a partly readable claim is not guessed at.
pub fn groups(claims: &Object) -> Vec<String> {
    let Some(items) = claims.get(GROUPS_CLAIM).and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut groups: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(group) if is_group_name(group) => {
                if !groups.iter().any(|g| g == group) {
                    groups.push(group.to_owned());
                }
            }
            _ => return Vec::new(),
        }
    }
    groups
}

/// A Cognito group name, which names an integration: non-empty, without
/// whitespace or control characters (Cognito's own pattern allows letters,
/// marks, symbols, numbers and punctuation only). The store keeps other
/// items (a user's revocation) under keys with a space, so no group's
/// records can meet them, and delivery refuses any other integration id.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_object_strict;

    const NOW: u64 = 1_800_000_000;

    fn settings() -> Settings {
        Settings {
            issuer: "https://issuer.example".into(),
            audiences: vec!["client".into()],
            leeway_seconds: 60,
            record_ttl_seconds: 7200,
        }
    }

    /// Valid claims with `extra` members merged in (replacing same names).
    fn claims(extra: &str) -> Object {
        let mut base: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"sub":"user-1","iss":"https://issuer.example","aud":"client","token_use":"id",
                "exp":1800000100,"iat":1799999000,"cognito:groups":["a","b","a"]}"#,
        )
        .unwrap();
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(extra).unwrap();
        for (k, v) in extra {
            if v == serde_json::json!("__remove__") {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
        parse_object_strict(serde_json::to_string(&base).unwrap().as_bytes()).unwrap()
    }

    fn check(extra: &str) -> Result<Identity, Rejection> {
        validate(&claims(extra), NOW, &settings())
    }

    #[test]
    fn valid_claims_give_sub_and_deduplicated_groups() {
        let id = check("{}").unwrap();
        assert_eq!(id.sub, "user-1");
        assert_eq!(id.groups, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn registered_claims_must_have_their_types() {
        for extra in [
            r#"{"exp":"1800000100"}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":null}"#,
            r#"{"exp":"__remove__"}"#,
            r#"{"nbf":true}"#,
            r#"{"iat":[1]}"#,
            r#"{"auth_time":"x"}"#,
            r#"{"sub":5}"#,
            r#"{"sub":""}"#,
            r#"{"sub":"__remove__"}"#,
            r#"{"jti":1}"#,
            r#"{"scope":{}}"#,
            r#"{"iss":1}"#,
            r#"{"token_use":["id"]}"#,
            r#"{"aud":7}"#,
            // Type errors win over a wrong issuer or an expired token.
            r#"{"iss":"https://evil.example","jti":1}"#,
            r#"{"exp":1,"sub":7}"#,
        ] {
            assert_eq!(check(extra), Err(Rejection::BadClaims), "{extra}");
        }
    }

    #[test]
    fn issuer_audience_and_use_are_exact() {
        for (extra, expected) in [
            (
                r#"{"iss":"https://issuer.example/"}"#,
                Rejection::WrongIssuer,
            ),
            (r#"{"iss":"__remove__"}"#, Rejection::WrongIssuer),
            (r#"{"aud":"Client"}"#, Rejection::WrongAudience),
            (r#"{"aud":["client"]}"#, Rejection::WrongAudience),
            (r#"{"aud":"__remove__"}"#, Rejection::WrongAudience),
            (r#"{"token_use":"access"}"#, Rejection::WrongTokenUse),
            (r#"{"token_use":"__remove__"}"#, Rejection::WrongTokenUse),
        ] {
            assert_eq!(check(extra), Err(expected), "{extra}");
        }
    }

    /// The identity of [`claims`]: what every accepted variant must give.
    fn user_1() -> Result<Identity, Rejection> {
        Ok(Identity {
            sub: "user-1".into(),
            groups: vec!["a".into(), "b".into()],
        })
    }

    #[test]
    fn aud_may_be_any_listed_client_and_nothing_else() {
        let mut settings = settings();
        settings.audiences = vec!["web".into(), "client".into()];
        let with_aud = |aud: &str| claims(&format!(r#"{{"aud":"{aud}"}}"#));
        assert!(validate(&with_aud("client"), NOW, &settings).is_ok());
        assert!(validate(&with_aud("web"), NOW, &settings).is_ok());
        for aud in ["mobile", "", "web,client", "Web"] {
            assert_eq!(
                validate(&with_aud(aud), NOW, &settings),
                Err(Rejection::WrongAudience),
                "{aud}"
            );
        }
        // No accepted audience: no token passes (the host never sends one).
        settings.audiences.clear();
        assert_eq!(
            validate(&with_aud("client"), NOW, &settings),
            Err(Rejection::WrongAudience)
        );
    }

    #[test]
    fn time_window_honours_the_leeway_at_its_edges() {
        // now < exp + leeway
        assert_eq!(check(&format!(r#"{{"exp":{}}}"#, NOW - 59)), user_1());
        assert_eq!(
            check(&format!(r#"{{"exp":{}}}"#, NOW - 60)),
            Err(Rejection::Expired)
        );
        assert_eq!(check(&format!(r#"{{"exp":{}.5}}"#, NOW - 60)), user_1());
        assert_eq!(
            check(&format!(r#"{{"exp":{}.0}}"#, NOW - 60)),
            Err(Rejection::Expired)
        );
        // nbf, iat <= now + leeway
        assert_eq!(check(&format!(r#"{{"nbf":{}}}"#, NOW + 60)), user_1());
        assert_eq!(
            check(&format!(r#"{{"nbf":{}}}"#, NOW + 61)),
            Err(Rejection::NotYetValid)
        );
        assert_eq!(check(&format!(r#"{{"iat":{}}}"#, NOW + 60)), user_1());
        assert_eq!(
            check(&format!(r#"{{"iat":{}.5}}"#, NOW + 60)),
            Err(Rejection::NotYetValid)
        );
        // A huge exp does not overflow.
        assert_eq!(check(r#"{"exp":18446744073709551615}"#), user_1());
    }

    #[test]
    fn unreadable_groups_count_as_none() {
        for extra in [
            r#"{"cognito:groups":"__remove__"}"#,
            r#"{"cognito:groups":"a"}"#,
            r#"{"cognito:groups":[]}"#,
            r#"{"cognito:groups":["a",1]}"#,
            r#"{"cognito:groups":["a",""]}"#,
            r#"{"cognito:groups":["a","b c"]}"#,
            r#"{"cognito:groups":["a","revoked\tb"]}"#,
            r#"{"cognito:groups":["a","\u00a0"]}"#,
            r#"{"cognito:groups":["a",null]}"#,
            r#"{"cognito:groups":{"a":1}}"#,
        ] {
            assert_eq!(
                check(extra).unwrap().groups,
                Vec::<String>::new(),
                "{extra}"
            );
        }
        assert_eq!(
            check(r#"{"cognito:groups":["b","a","b","c","a"]}"#)
                .unwrap()
                .groups,
            vec!["b", "a", "c"]
        );
    }
}
