//! The issuer's keys over HTTP: its OpenID discovery document
//! (`<issuer>/.well-known/openid-configuration`) names its `jwks_uri`, which lists its keys. This
//! is how Cognito and every OIDC provider publish them.
//!
//! HTTPS, with the Mozilla roots compiled in (no file in the image to trust) on aws-lc-rs, the
//! functions' TLS provider already. `http://` only to a loopback host: a token check must never
//! trust keys anyone on the path could swap. Each request is bounded in time and size, and
//! redirects are not followed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::FetchKeys;

/// How long one request (connect, TLS, answer) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetch of the keys (discovery, then the JWKS) may take in all: a cold authorizer
/// that waits longer than its timeout (the stack's 10 s) would answer 500, not 401.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(6);
/// The largest discovery document or key set read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An issuer URL fit to fetch keys from: `https://`, or `http://` to a loopback host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerUrl(String);

impl IssuerUrl {
    /// `url` checked; `iss` in tokens must equal it exactly, so it is kept as given.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri = checked(url)?;
        if uri.query().is_some() {
            return Err(format!("{url:?} has a query string; an issuer has none"));
        }
        Ok(IssuerUrl(url.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the discovery document is.
    pub fn discovery(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.0.trim_end_matches('/')
        )
    }
}

impl std::fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts of `url` a request needs, or why it cannot be fetched.
fn checked(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(format!(
                "{url:?} is http://: keys are fetched over https:// (http:// only from localhost)"
            ));
        }
        _ => return Err(format!("{url:?} is not an https:// URL")),
    }
    Ok(uri)
}

/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A JWK set as published: each key parsed on its own, so that one of a type this code cannot
/// use (an OKP or secp256k1 key, a type newer than jsonwebtoken) does not hide the others.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl RawKeySet {
    fn parsed(self) -> JwkSet {
        let keys = self
            .keys
            .into_iter()
            .filter_map(|key| match serde_json::from_value::<Jwk>(key) {
                Ok(key) => Some(key),
                Err(error) => {
                    tracing::debug!(%error, "skipping a published key this code cannot use");
                    None
                }
            })
            .collect();
        JwkSet { keys }
    }
}

/// The discovery document's fields this needs.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The issuer's keys, fetched through discovery each time [`FetchKeys::fetch`] is called (the
/// [`super::KeyCache`] decides when).
pub struct HttpKeys {
    issuer: IssuerUrl,
}

impl HttpKeys {
    pub fn new(issuer: IssuerUrl) -> Self {
        HttpKeys { issuer }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, Jwk>, String> {
        // both requests within one bound, well inside an authorizer's timeout
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded())
            .await
            .map_err(|_| {
                format!(
                    "the issuer's discovery document and keys did not arrive within {FETCH_TIMEOUT:?}"
                )
            })?
    }

    async fn fetch_unbounded(&self) -> Result<HashMap<String, Jwk>, String> {
        let discovery_url = self.issuer.discovery();
        let body = get(&discovery_url).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| format!("{discovery_url}: not a discovery document: {e}"))?;
        // OpenID Connect Discovery 1.0, 4.3: the document's issuer is the one it was fetched for
        if discovery.issuer != self.issuer.as_str() {
            return Err(format!(
                "{discovery_url} names the issuer {:?}, not {:?}",
                discovery.issuer,
                self.issuer.as_str()
            ));
        }
        let body = get(&discovery.jwks_uri).await?;
        let set: RawKeySet = serde_json::from_slice(&body)
            .map_err(|e| format!("{}: not a JWK set: {e}", discovery.jwks_uri))?;
        Ok(signing_keys(set.parsed()))
    }
}

impl FetchKeys for HttpKeys {
    type Key = Jwk;

    async fn fetch(&self) -> Result<HashMap<String, Jwk>, String> {
        self.fetch_keys().await
    }
}

/// The keys that can check a signature, by `kid` (a key without one cannot be chosen; one for
/// encryption must not be used).
fn signing_keys(set: JwkSet) -> HashMap<String, Jwk> {
    set.keys
        .into_iter()
        .filter(|key| !matches!(key.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature))
        .filter_map(|key| Some((key.common.key_id.clone()?, key)))
        .collect()
}

/// The body of a 200 answer to `GET url`, or what went wrong.
pub async fn get(url: &str) -> Result<Bytes, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, get_unbounded(url)).await {
        Ok(result) => result.map_err(|e| format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

async fn get_unbounded(url: &str) -> Result<Bytes, String> {
    let uri = checked(url)?;
    let host = uri.host().unwrap_or_default().to_owned();
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(stream, &authority, &path).await
    } else {
        exchange(tcp, &authority, &path).await
    }
}

/// One HTTP/1.1 GET on `io`, its 200 body read up to [`MAX_BODY_BYTES`].
async fn exchange<S>(io: S, authority: &str, path: &str) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("webchat/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| format!("reading the body: {e}"))
    }
    .await;
    drop(sender);
    connection.abort();
    answer
}

/// One TLS configuration for the process: the Mozilla roots, aws-lc-rs.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_loopback_http() {
        for good in [
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
            "https://example.com/",
            "http://127.0.0.1:9000",
            "http://localhost:9000/realm",
            "http://[::1]:9000",
        ] {
            assert!(IssuerUrl::parse(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("http://example.com", "http://"),
            ("http://10.0.0.1:80", "http://"),
            ("ftp://example.com", "https://"),
            ("example.com", "https://"),
            ("https://example.com/?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let err = IssuerUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn discovery_is_under_the_issuer() {
        let at = |url| IssuerUrl::parse(url).unwrap().discovery();
        assert_eq!(
            at("https://example.com/pool"),
            "https://example.com/pool/.well-known/openid-configuration"
        );
        assert_eq!(
            at("https://example.com/"),
            "https://example.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn only_signing_keys_with_a_kid_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "a", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "b", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "c",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        let mut kids: Vec<_> = signing_keys(set).into_keys().collect();
        kids.sort();
        assert_eq!(kids, ["a", "c"]);
    }

    #[test]
    fn a_key_of_a_type_this_code_cannot_use_does_not_hide_the_others() {
        let published: RawKeySet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
            {"kty": "ML-DSA", "kid": "pq", "pub": "AAAA"},
            {"kty": "EC", "crv": "P-256", "kid": "a", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        let kept: Vec<_> = signing_keys(published.parsed()).into_keys().collect();
        assert_eq!(kept, ["a"]);
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_not_a_hang() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = get(&format!("http://127.0.0.1:{port}/keys"))
            .await
            .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[tokio::test]
    async fn https_speaks_tls_and_refuses_a_server_that_does_not() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n{}").await;
        });
        let err = get(&format!("https://127.0.0.1:{port}/keys"))
            .await
            .unwrap_err();
        assert!(err.contains("TLS with 127.0.0.1"), "{err}");
    }
}
