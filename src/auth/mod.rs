//! Who is talking (issue 21): the checks a JSON Web Token's claims must pass once its signature
//! has been verified against the issuer's keys, and the identity they give a connection.
//!
//! The rules are OpenID Connect's and Cognito's: `iss` is the issuer exactly; `aud` holds the
//! audience, or, for a token without `aud` (a Cognito access token), `client_id` is it; `exp` is in
//! the future and `nbf`, if any, has passed, both within a minute of skew; `token_use`, when
//! present, is `id` or `access`; `sub` names the user. The display name is the token's `name`,
//! else `preferred_username`, `cognito:username`, `email`, then `sub`, at most 64 characters.
//!
//! [`KeyCache`] keeps the issuer's signing keys across connects, refetching them for an unknown
//! `kid` at most once a minute; [`jwks`] fetches them through the issuer's OpenID discovery;
//! [`issuer`] is an issuer of our own, for `webchat-local --dev-issuer` and the tests.

#[cfg(feature = "local")]
pub mod issuer;
#[cfg(feature = "jwks")]
pub mod jwks;
mod keys;
mod verify;

pub use keys::{FetchKeys, KeyCache, KeyError, MIN_REFETCH};
pub use verify::Verifier;

use serde_json::{Map, Value};

/// The clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: i64 = 60;

/// The longest display name taken from a token, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 64;

/// What a token must have been issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The issuer's URL, exactly as the tokens' `iss` says it.
    pub issuer: String,
    /// The audience: an OIDC client id (Cognito: the app client's id).
    pub audience: String,
}

/// The identity a valid token gives a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: the user, stable across their connections.
    pub user: String,
    /// The name shown to others.
    pub name: String,
    /// The token's `exp`, in seconds since the epoch: frames after it are refused.
    pub expires_at: i64,
}

/// Why a token's claims were refused: for the log, never the client (which gets 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a JSON Web Token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not accepted (RS256 and ES256 only)")]
    Algorithm(String),
    #[error(transparent)]
    Key(KeyError),
    #[error("key {kid:?} is not of the kind {alg} needs")]
    KeyMismatch { kid: String, alg: String },
    #[error("the signature does not verify: {0}")]
    Signature(String),
    #[error("the token has no {0:?} claim of the right type")]
    Missing(&'static str),
    #[error("issued by {found:?}, not {expected:?}")]
    Issuer { found: String, expected: String },
    #[error("not issued for {expected:?} (aud {aud}, client_id {client_id})")]
    Audience {
        expected: String,
        aud: String,
        client_id: String,
    },
    #[error("expired at {exp} (now {now}, {LEEWAY_SECONDS} s of skew allowed)")]
    Expired { exp: i64, now: i64 },
    #[error("not valid before {nbf} (now {now}, {LEEWAY_SECONDS} s of skew allowed)")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("token_use {0:?} is neither \"id\" nor \"access\"")]
    TokenUse(String),
}

/// Checks verified claims against what is expected at `now` (seconds since the epoch).
pub fn check(
    claims: &Map<String, Value>,
    expected: &Expected,
    now: i64,
) -> Result<Identity, Refusal> {
    let text = |name: &'static str| claims.get(name).and_then(Value::as_str);
    let issuer = text("iss").ok_or(Refusal::Missing("iss"))?;
    if issuer != expected.issuer {
        return Err(Refusal::Issuer {
            found: issuer.to_owned(),
            expected: expected.issuer.clone(),
        });
    }
    check_audience(claims, &expected.audience)?;
    let exp = seconds(claims.get("exp")).ok_or(Refusal::Missing("exp"))?;
    if now > exp.saturating_add(LEEWAY_SECONDS) {
        return Err(Refusal::Expired { exp, now });
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = seconds(Some(nbf)).ok_or(Refusal::Missing("nbf"))?;
        if now.saturating_add(LEEWAY_SECONDS) < nbf {
            return Err(Refusal::NotYetValid { nbf, now });
        }
    }
    if let Some(token_use) = claims.get("token_use") {
        match token_use.as_str() {
            Some("id" | "access") => {}
            _ => return Err(Refusal::TokenUse(token_use.to_string())),
        }
    }
    let user = text("sub")
        .filter(|sub| !sub.is_empty())
        .ok_or(Refusal::Missing("sub"))?;
    if user.len() > crate::protocol::MAX_USER_BYTES {
        return Err(Refusal::Malformed(format!(
            "sub is {} bytes; at most {} are accepted",
            user.len(),
            crate::protocol::MAX_USER_BYTES
        )));
    }
    Ok(Identity {
        user: user.to_owned(),
        name: display_name(claims, user),
        expires_at: exp,
    })
}

/// `aud` (a string, or an array of them) holds the audience; without `aud`, `client_id` is it.
fn check_audience(claims: &Map<String, Value>, audience: &str) -> Result<(), Refusal> {
    let holds = match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        Some(_) => false,
        None => claims.get("client_id").and_then(Value::as_str) == Some(audience),
    };
    if holds {
        return Ok(());
    }
    let shown = |name| claims.get(name).map_or("none".into(), Value::to_string);
    Err(Refusal::Audience {
        expected: audience.to_owned(),
        aud: shown("aud"),
        client_id: shown("client_id"),
    })
}

/// A NumericDate: whole seconds (a fraction is cut, as RFC 7519 allows non-integer values).
fn seconds(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// The first of `name`, `preferred_username`, `cognito:username` and `email` that is a non-empty
/// string, else `sub`; at most [`MAX_TOKEN_NAME_CHARS`] characters, cut on a character boundary.
pub fn display_name(claims: &Map<String, Value>, sub: &str) -> String {
    ["name", "preferred_username", "cognito:username", "email"]
        .iter()
        .filter_map(|claim| claims.get(*claim).and_then(Value::as_str))
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or(sub)
        .chars()
        .take(MAX_TOKEN_NAME_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_796_000_000;

    fn expected() -> Expected {
        Expected {
            issuer: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc".into(),
            audience: "client-1".into(),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        let Value::Object(mut claims) = json!({
            "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc",
            "aud": "client-1",
            "sub": "user-1",
            "exp": NOW + 600,
        }) else {
            unreachable!()
        };
        if let Value::Object(more) = value {
            for (key, value) in more {
                if value.is_null() {
                    claims.remove(&key);
                } else {
                    claims.insert(key, value);
                }
            }
        }
        claims
    }

    #[test]
    fn a_valid_token_gives_its_user_name_and_expiry() {
        let identity = check(&claims(json!({"name": "Alice"})), &expected(), NOW).unwrap();
        assert_eq!(
            identity,
            Identity {
                user: "user-1".into(),
                name: "Alice".into(),
                expires_at: NOW + 600
            }
        );
    }

    #[test]
    fn the_issuer_must_be_exact() {
        for iss in [
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/",
            "https://evil.example/eu-west-1_abc",
        ] {
            let refused = check(&claims(json!({"iss": iss})), &expected(), NOW);
            assert!(matches!(refused, Err(Refusal::Issuer { .. })), "{iss}");
        }
        let missing = check(&claims(json!({"iss": null})), &expected(), NOW);
        assert_eq!(missing, Err(Refusal::Missing("iss")));
    }

    #[test]
    fn the_audience_is_aud_or_for_an_access_token_client_id() {
        let ok = |value| check(&claims(value), &expected(), NOW).is_ok();
        assert!(ok(json!({"aud": ["other", "client-1"]})));
        assert!(ok(
            json!({"aud": null, "client_id": "client-1", "token_use": "access"})
        ));
        assert!(!ok(json!({"aud": "other"})));
        assert!(!ok(json!({"aud": ["other"]})));
        assert!(!ok(json!({"aud": null, "client_id": "other"})));
        assert!(!ok(json!({"aud": null})));
        // a token with an aud for someone else is not saved by a matching client_id
        assert!(!ok(json!({"aud": "other", "client_id": "client-1"})));
    }

    #[test]
    fn exp_and_nbf_allow_a_minute_of_skew() {
        let at = |value, now| check(&claims(value), &expected(), now);
        assert!(at(json!({"exp": NOW - 60}), NOW).is_ok());
        assert_eq!(
            at(json!({"exp": NOW - 61}), NOW),
            Err(Refusal::Expired {
                exp: NOW - 61,
                now: NOW
            })
        );
        assert!(at(json!({"nbf": NOW + 60}), NOW).is_ok());
        assert!(matches!(
            at(json!({"nbf": NOW + 61}), NOW),
            Err(Refusal::NotYetValid { .. })
        ));
        assert!(at(json!({"exp": (NOW + 10) as f64 + 0.5}), NOW).is_ok());
        assert_eq!(at(json!({"exp": null}), NOW), Err(Refusal::Missing("exp")));
        assert_eq!(
            at(json!({"exp": "tomorrow"}), NOW),
            Err(Refusal::Missing("exp"))
        );
        assert!(at(json!({"exp": i64::MAX}), NOW).is_ok());
    }

    #[test]
    fn token_use_if_present_is_id_or_access() {
        for ok in ["id", "access"] {
            assert!(check(&claims(json!({"token_use": ok})), &expected(), NOW).is_ok());
        }
        assert!(matches!(
            check(&claims(json!({"token_use": "refresh"})), &expected(), NOW),
            Err(Refusal::TokenUse(_))
        ));
    }

    #[test]
    fn a_token_without_a_subject_names_no_one() {
        for sub in [json!(null), json!(""), json!(42)] {
            assert_eq!(
                check(&claims(json!({"sub": sub})), &expected(), NOW),
                Err(Refusal::Missing("sub"))
            );
        }
    }

    #[test]
    fn the_name_is_the_first_claim_that_has_one_cut_to_64_characters() {
        let name = |value| display_name(&claims(value), "user-1");
        assert_eq!(name(json!({})), "user-1");
        assert_eq!(name(json!({"email": "a@example.org"})), "a@example.org");
        assert_eq!(
            name(json!({"email": "a@example.org", "cognito:username": "alice"})),
            "alice"
        );
        assert_eq!(
            name(json!({"preferred_username": "al", "cognito:username": "alice"})),
            "al"
        );
        assert_eq!(
            name(json!({"name": "  ", "preferred_username": "al"})),
            "al"
        );
        assert_eq!(name(json!({"name": 7, "email": "e@x"})), "e@x");
        let long = "é".repeat(70);
        let cut = name(json!({ "name": long }));
        assert_eq!(cut.chars().count(), 64);
        assert!(long.starts_with(&cut));
        assert_eq!(
            name(json!({"name": "<b>Ann</b>"})),
            "<b>Ann</b>",
            "shown verbatim: clients escape it"
        );
    }
}
