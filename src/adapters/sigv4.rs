//! AWS Signature Version 4 for the one request a fan-out makes thousands of times:
//! `POST {stage}/@connections/{id}` with the message as its body.
//!
//! The SDK's signer builds the canonical request from a general header map (lower-casing,
//! sorting, normalizing every header) and derives the signing key (four HMACs) on every call;
//! that was an eighth of the CPU a post cost. Here the request has a fixed shape (signed headers
//! `host`, `x-amz-date` and, with session credentials, `x-amz-security-token`), and the key is
//! derived once a day per set of credentials. The HMAC and key derivation are aws-sigv4's own;
//! the tests check every signature against aws-sigv4's `sign` for the same request.

use std::fmt::Write;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A signing key: credentials, and the key derived from them for one day, region and service.
pub struct SigningKey {
    credentials: Credentials,
    /// `YYYYMMDD`, the day the key is valid for.
    date: String,
    /// `{date}/{region}/{service}/aws4_request`
    scope: String,
    key: Vec<u8>,
}

impl SigningKey {
    pub fn new(credentials: Credentials, time: SystemTime, region: &str, service: &str) -> Self {
        let date = DateTime::<Utc>::from(time).format("%Y%m%d").to_string();
        let key = generate_signing_key(credentials.secret_access_key(), time, region, service)
            .as_ref()
            .to_vec();
        SigningKey {
            scope: format!("{date}/{region}/{service}/aws4_request"),
            credentials,
            date,
            key,
        }
    }

    /// Whether the key can sign at `time`: the same day, and the credentials not about to expire
    /// (five minutes before, as the SDK's identity cache refreshes them).
    pub fn is_valid_at(&self, time: SystemTime) -> bool {
        let soon = time + std::time::Duration::from_secs(300);
        DateTime::<Utc>::from(time).format("%Y%m%d").to_string() == self.date
            && self.credentials.expiry().is_none_or(|expiry| expiry > soon)
    }

    pub fn session_token(&self) -> Option<&str> {
        self.credentials.session_token()
    }
}

/// What a signed request carries besides `host` (and the session token, if any).
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    /// The `x-amz-date` header.
    pub amz_date: String,
    /// The `authorization` header.
    pub authorization: String,
}

/// Signs a request with no query string and the headers `host`, `x-amz-date` and (with session
/// credentials) `x-amz-security-token`.
///
/// `canonical_path` is the request's path as sent (its segments percent-encoded once, as the
/// SDK's URI labels are), encoded once more: SigV4's double encoding for every service but S3.
/// `host` is the `host` header: the authority, without a default port.
pub fn sign(
    key: &SigningKey,
    method: &str,
    host: &str,
    canonical_path: &str,
    time: SystemTime,
    body: &[u8],
) -> Signature {
    let amz_date = DateTime::<Utc>::from(time)
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let token = key.session_token();
    let signed_headers = if token.is_some() {
        "host;x-amz-date;x-amz-security-token"
    } else {
        "host;x-amz-date"
    };
    let mut canonical = String::with_capacity(256 + canonical_path.len());
    let _ = write!(
        canonical,
        "{method}\n{canonical_path}\n\nhost:{host}\nx-amz-date:{amz_date}\n"
    );
    if let Some(token) = token {
        let _ = writeln!(canonical, "x-amz-security-token:{}", token.trim());
    }
    let _ = write!(
        canonical,
        "\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        key.scope,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let signature = calculate_signature(&key.key, string_to_sign.as_bytes());
    Signature {
        authorization: format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
            key.credentials.access_key_id(),
            key.scope
        ),
        amz_date,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4::SigningParams;
    use proptest::prelude::*;

    use super::*;

    /// aws-sigv4's signature for the same request, with the SDK's default settings.
    fn reference(
        credentials: &Credentials,
        region: &str,
        uri: &str,
        time: SystemTime,
        body: &[u8],
    ) -> (String, String) {
        let identity = credentials.clone().into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("execute-api")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let request =
            SignableRequest::new("POST", uri, std::iter::empty(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
            .unwrap()
            .into_parts();
        let header = |name: &str| {
            instructions
                .headers()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_owned())
                .unwrap()
        };
        (header("x-amz-date"), header("authorization"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every signature equals aws-sigv4's for the same request: connection ids with any
        /// characters (the SDK percent-encodes the label), hosts with and without ports,
        /// temporary and long-term credentials, any body, any second of any day.
        #[test]
        fn signs_as_aws_sigv4_does(
            id in "[A-Za-z0-9+/=_-]{1,24}",
            stage in "[a-z0-9_-]{1,12}",
            port in proptest::option::of(1024u16..65535),
            https in any::<bool>(),
            token in proptest::option::of("[A-Za-z0-9+/=]{16,64}"),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            seconds in 1_500_000_000u64..2_000_000_000,
        ) {
            let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, None, "test");
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            let host = match port {
                Some(port) => format!("abc123.execute-api.eu-west-1.amazonaws.com:{port}"),
                None => "abc123.execute-api.eu-west-1.amazonaws.com".to_owned(),
            };
            let label = aws_smithy_http::label::fmt_string(&id, aws_smithy_http::label::EncodingStrategy::Default);
            let path = format!("/{stage}/@connections/{label}");
            let scheme = if https { "https" } else { "http" };
            let (date, authorization) = reference(&credentials, "eu-west-1", &format!("{scheme}://{host}{path}"), time, &body);

            let key = SigningKey::new(credentials, time, "eu-west-1", "execute-api");
            let canonical_path = aws_smithy_http::label::fmt_string(&path, aws_smithy_http::label::EncodingStrategy::Greedy);
            let ours = sign(&key, "POST", &host, &canonical_path, time, &body);
            prop_assert_eq!(ours, Signature { amz_date: date, authorization });
        }
    }

    #[test]
    fn a_key_is_valid_for_its_day_until_its_credentials_near_expiry() {
        let day = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let lasting = Credentials::new("AKID", "secret", None, None, "test");
        let key = SigningKey::new(lasting, day, "us-east-1", "execute-api");
        assert!(key.is_valid_at(day + Duration::from_secs(6000)));
        assert!(
            !key.is_valid_at(day + Duration::from_secs(7000)),
            "the next day"
        );
        let expiring = Credentials::new(
            "AKID",
            "secret",
            Some("token".into()),
            Some(day + Duration::from_secs(600)),
            "test",
        );
        let key = SigningKey::new(expiring, day, "us-east-1", "execute-api");
        assert!(key.is_valid_at(day + Duration::from_secs(299)));
        assert!(!key.is_valid_at(day + Duration::from_secs(301)));
    }
}
