//! An OpenID issuer of our own, for `webchat-local --dev-issuer` and the tests: ES256 keys (or
//! RS256, as Cognito's) made at start, the discovery document and the JWKS served as Cognito serves them, and tokens minted
//! on request. Never a production identity provider: anyone who can reach `/dev/token` is whoever
//! they say, which is why webchat-local serves that to loopback clients only.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Where the keys are, under the issuer's URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the discovery document is, under the issuer's URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// How long a minted token lasts.
pub const TOKEN_SECONDS: i64 = 3600;

/// One signing key: its id, its private half for signing, its public half as a JWK.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: String, algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::RS256 => SigningKey::generate_rsa(kid),
            _ => SigningKey::generate_ec(kid),
        }
    }

    /// A 2048-bit RSA key, as Cognito's.
    fn generate_rsa(kid: String) -> Self {
        use aws_lc_rs::encoding::AsDer;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("aws-lc-rs generates an RSA key");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .expect("aws-lc-rs serializes its own key");
        let pkcs1 = pkcs1_of(pkcs8.as_ref()).expect("a PKCS#8 RSA key holds a PKCS#1 one");
        let encoding = EncodingKey::from_rsa_der(pkcs1);
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::RS256)
                .expect("an RSA key has a JWK"),
        )
        .expect("a JWK serializes");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("RS256");
        SigningKey {
            kid,
            algorithm: Algorithm::RS256,
            encoding,
            jwk,
        }
    }

    fn generate_ec(kid: String) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("aws-lc-rs generates a P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("aws-lc-rs serializes its own key");
        // the public key is the uncompressed point: 0x04, then x and y, 32 bytes each
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        SigningKey {
            kid,
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208: a SEQUENCE of the
/// version, the algorithm, then the key as an OCTET STRING): jsonwebtoken signs with PKCS#1.
fn pkcs1_of(pkcs8: &[u8]) -> Option<&[u8]> {
    /// One DER element at the start of `der`: its tag, its contents, and what follows it.
    fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = der.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count > 4 || rest.len() < count {
                return None;
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |n, &b| (n << 8) | usize::from(b));
            (length, &rest[count..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }
    let (0x30, info, _) = element(pkcs8)? else {
        return None;
    };
    let (0x02, _version, rest) = element(info)? else {
        return None;
    };
    let (0x30, _algorithm, rest) = element(rest)? else {
        return None;
    };
    let (0x04, key, _) = element(rest)? else {
        return None;
    };
    Some(key)
}

/// The issuer: its URL, its keys (the newest signs), and what was asked of it.
pub struct LocalIssuer {
    url: String,
    algorithm: Algorithm,
    keys: RwLock<Vec<SigningKey>>,
    generation: AtomicUsize,
    down: AtomicBool,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
}

impl LocalIssuer {
    /// An issuer at `url` (its `iss`; serve [`LocalIssuer::router`] there) with one fresh ES256
    /// key.
    pub fn new(url: impl Into<String>) -> Arc<Self> {
        LocalIssuer::signing_with(url, Algorithm::ES256)
    }

    /// An issuer whose keys sign with `algorithm`: ES256, or RS256 as Cognito's do.
    pub fn signing_with(url: impl Into<String>, algorithm: Algorithm) -> Arc<Self> {
        Arc::new(LocalIssuer {
            url: url.into(),
            algorithm,
            keys: RwLock::new(vec![SigningKey::generate("dev-1".into(), algorithm)]),
            generation: AtomicUsize::new(1),
            down: AtomicBool::new(false),
            discovery_requests: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A token with `claims` (`iss` is added when missing), signed ES256 by the newest key.
    pub fn mint(&self, claims: &Value) -> String {
        let mut claims = claims.clone();
        if let Some(map) = claims.as_object_mut() {
            map.entry("iss").or_insert_with(|| json!(self.url));
        }
        let keys = self.keys.read().expect("issuer keys");
        let key = keys.last().expect("an issuer has a key");
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("ES256 signs any claims")
    }

    /// A one-hour token for `name` and `audience` from `now` (seconds since the epoch); its
    /// `sub` is derived from the name, so one name is one user across tabs.
    pub fn mint_for(&self, name: &str, audience: &str, now: i64) -> String {
        self.mint(&json!({
            "sub": dev_user(name),
            "aud": audience,
            "name": name,
            "token_use": "id",
            "iat": now,
            "exp": now + TOKEN_SECONDS,
        }))
    }

    /// A new key signs from now on; the old ones stay published. Returns the new `kid`.
    pub fn rotate(&self) -> String {
        let n = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let key = SigningKey::generate(format!("dev-{n}"), self.algorithm);
        let kid = key.kid.clone();
        self.keys.write().expect("issuer keys").push(key);
        kid
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many times the discovery document and the key set were asked for.
    pub fn requests(&self) -> (usize, usize) {
        (
            self.discovery_requests.load(Ordering::SeqCst),
            self.jwks_requests.load(Ordering::SeqCst),
        )
    }

    /// The public keys, as a JWK set.
    pub fn jwks(&self) -> Value {
        let keys = self.keys.read().expect("issuer keys");
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The discovery document and the JWKS, at the paths Cognito uses.
    pub fn router<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> axum::Router<S> {
        axum::Router::new()
            .route(DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks))
            .with_state(self.clone())
    }
}

/// The `sub` of a dev token: `dev-` and 16 hex digits of the name's SHA-256.
pub fn dev_user(name: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    format!("dev-{}", hex::encode(&digest.as_ref()[..8]))
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the issuer is down").into_response()
}

async fn discovery(State(issuer): State<Arc<LocalIssuer>>) -> Response {
    issuer.discovery_requests.fetch_add(1, Ordering::SeqCst);
    if issuer.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    let base = issuer.url.trim_end_matches('/');
    Json(json!({
        "issuer": issuer.url,
        "jwks_uri": format!("{base}{JWKS_PATH}"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
    }))
    .into_response()
}

async fn jwks(State(issuer): State<Arc<LocalIssuer>>) -> Response {
    issuer.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if issuer.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    Json(issuer.jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks::{HttpKeys, IssuerUrl};
    use crate::auth::{Expected, Refusal, Verifier};

    /// An issuer served on a free loopback port.
    async fn serve() -> Arc<LocalIssuer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = LocalIssuer::new(format!("http://{}", listener.local_addr().unwrap()));
        let app: axum::Router = issuer.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    fn verifier(issuer: &LocalIssuer) -> Verifier<HttpKeys> {
        Verifier::new(
            HttpKeys::new(IssuerUrl::parse(issuer.url()).unwrap()),
            Expected {
                issuer: issuer.url().to_owned(),
                audience: "webchat".into(),
            },
        )
    }

    #[tokio::test]
    async fn its_tokens_verify_through_discovery_over_http() {
        let issuer = serve().await;
        let token = issuer.mint_for("Ada Lovelace", "webchat", 1_000);
        let identity = verifier(&issuer).verify(&token, 1_010).await.unwrap();
        assert_eq!(identity.name, "Ada Lovelace");
        assert_eq!(identity.user, dev_user("Ada Lovelace"));
        assert_eq!(identity.expires_at, 1_000 + TOKEN_SECONDS);
        assert_eq!(issuer.requests(), (1, 1));
    }

    /// Moves tokio's clock past the refetch interval (paused only for the jump: real sockets
    /// and a paused clock do not mix).
    async fn a_minute_later() {
        tokio::time::pause();
        tokio::time::advance(crate::auth::MIN_REFETCH).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_and_a_down_issuer_keeps_the_old_keys() {
        let issuer = serve().await;
        let verifier = verifier(&issuer);
        let first = issuer.mint_for("a", "webchat", 1_000);
        verifier.verify(&first, 1_000).await.unwrap();
        issuer.set_down(true);
        issuer.rotate();
        let second = issuer.mint_for("b", "webchat", 1_000);
        a_minute_later().await;
        let refused = verifier.verify(&second, 1_000).await.unwrap_err();
        assert!(matches!(refused, Refusal::Key(_)), "{refused}");
        // the old key still works while the issuer is down
        verifier.verify(&first, 1_000).await.unwrap();
        issuer.set_down(false);
        a_minute_later().await;
        verifier.verify(&second, 1_000).await.unwrap();
        assert_eq!(issuer.requests(), (3, 2));
    }

    #[tokio::test]
    async fn rs256_keys_as_cognito_signs_verify_too() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = LocalIssuer::signing_with(url, Algorithm::RS256);
        let app: axum::Router = issuer.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let token = issuer.mint_for("grace", "webchat", 1_000);
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().alg,
            Algorithm::RS256
        );
        assert_eq!(issuer.jwks()["keys"][0]["kty"], "RSA");
        let identity = verifier(&issuer).verify(&token, 1_000).await.unwrap();
        assert_eq!(identity.name, "grace");
    }

    #[test]
    fn one_name_is_one_user() {
        assert_eq!(dev_user("ada"), dev_user("ada"));
        assert_ne!(dev_user("ada"), dev_user("Ada"));
        assert_eq!(dev_user("ada").len(), "dev-".len() + 16);
    }
}
