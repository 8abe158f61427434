//! A token checked end to end: its header (RS256 or ES256, a `kid`), its signature by the issuer's
//! key for that `kid` (of the type the algorithm needs), then its claims ([`super::check`]).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{Expected, FetchKeys, Identity, KeyCache, Refusal, check};

/// Checks tokens for one issuer and audience, with that issuer's keys kept in memory.
pub struct Verifier<F: FetchKeys<Key = Jwk>> {
    keys: KeyCache<F>,
    expected: Expected,
}

impl<F: FetchKeys<Key = Jwk>> Verifier<F> {
    pub fn new(keys: F, expected: Expected) -> Self {
        Verifier {
            keys: KeyCache::new(keys),
            expected,
        }
    }

    /// What tokens must have been issued for.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The identity `token` gives at `now` (seconds since the epoch), or why it gives none.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Identity, Refusal> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refusal::Malformed(e.to_string()))?;
        // never `none`, never HS*: a public key must not become an HMAC secret
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_deref().ok_or(Refusal::Missing("kid"))?;
        let jwk = self.keys.key(kid).await.map_err(Refusal::Key)?;
        if !fits(&jwk, header.alg) {
            return Err(Refusal::KeyMismatch {
                kid: kid.to_owned(),
                alg: format!("{:?}", header.alg),
            });
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        // the claims are checked by `check`, with the rules of this crate, after the signature
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        check(&data.claims, &self.expected, now)
    }
}

/// Whether the issuer's key is of the type `alg` needs (and names no other algorithm).
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let named = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    let typed = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    named && typed
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::KeyError;

    /// Test fixtures, made with openssl for these tests only: a P-256 key (PKCS#8 DER) and a
    /// 2048-bit RSA key (PKCS#1 DER).
    const EC_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgW4fqIB+a0u+FWvM+/awhISqRZ6su+/ansag8N6+6s3GhRANCAARFDmN8l3zk1phe6w0SvBc+7P0pIcdhtJZ9mvq8zb7j7p8UvDTz9qAk7ubGm/87w7bN5i1uvQu6674qJagIqNou";
    const RSA_KEY: &[&str] = &[
        "MIIEpQIBAAKCAQEAmA5AGNrB6h6vkEl4wBCgGqNyQ9gSaKitK7gk/4H569H4Zuk6S07GFdDqAYFRmPCLp4lNN9dH8l",
        "7P2LxT3T0x6uzhwUGsv58b7qFXJy62310hZTfMucFKt2jomWp/5GOaaKL+BkTEC6D8f7mFe2N8BtkdDXibboPgxnA8",
        "TEDOFhoMIRXi2Wkesfki0SxyQOlOFht15FWVRpu0SW7dHhN1Gsknq8jFL+g6GiOT3Z7sbm/l+UGG6DwBW4cl7u/g97",
        "/FPTPMlVwIPGoy8TuuzIX/91H3lTzcEzsO7EunLp6nAPCtZsCWn15yTyZ0fLuB23Mbnk9jINyANwpMZYnexxOzyQID",
        "AQABAoIBAARl2R2+6f/i/lHuhhMMCA1tL8ddjv6+7i9HBq7rK/bRnl0fnsOB1kHYRoRfoKQLRQbF9llInTiZ3GoY3F",
        "YYSILSch8cTqpGKFEpEnO8KqbgMzCRwhaXTBls69lQFr3c0aD4Id+9imwJrnPlQkKU2If8LJZwqBI0t0IWCfBsqWlD",
        "MSx3sWb6RyzrhbfH53MY6MqHoLTLahkCYYgNm8Ahsh48YFSI67HCYB5Gc2gFBFQhVW87Hcf+U+o4d4cDc9QNNQNRNl",
        "nxe46COJLC6OZswm217DpNLul9mtbuljxchMbkxHVNTCOnYoTMyK5TxnhgiGPW4U3YKcKnBUjrpGceAL8CgYEAzx/j",
        "uv6BMloHkLWXseBNsaJGxaeWIF2WczM3i8WZ9z74FbIuhyag6cklrYWz3mF4Ug5WpaLCFXLx9NokP834z4zqS0Bl0j",
        "uHe+b9TvCVvi1YlUAYWhD5rdoezTqJTUFpB08eStuLbhPTQrZm9L1q8dUBTVAnJ8cJ0U8+EU+dfisCgYEAu++5XXMX",
        "LCGOfO4vfs6hbwOcEVqC90ARRM9K3CbH7QUCffcApuIrk3ybFM6TbG94E1W9kRm0Ah5rOR6oRBvLRddsU7qukDj208",
        "855VFH/wHoYBLoyLAA6Zu9ir/qyf381JwoWQHP4wzkYgrgoeU9eXyw/rC0UYHKmgXlhWD8z9sCgYEAvfQ5Hp2aT1tR",
        "5N0lqfRUTLzOuybe///UowItxvoKIj6VtxAaq8g5ey8GZwVf2Gr7tgWAYZfK93Dbhfspk3qK3Y4Wsbz1pMEDmBZX6b",
        "WrHybnPrnxm2hGE7Me3Ij6sudyM0nUNkLytJlp/pzZ/0pYckEvWIBR6KEZ1+QcwDOL9NECgYEAkmj/j73Jn6fEya8F",
        "cVSoj0PQofRRcy2GRoT3XOsZdZ0hg+CZsWkhaZT5fAwy7ZcphGaXeCL+CWiJP8aSb/z3L0HUMqaMt+6o2/nksLHR1O",
        "g3kCErGK2FCHk8AIvi7dngzgGZrT2sJsY0ZezzcyyT58EsYj5nO9hRbgyJ8o7MZWECgYEAx3USUvZHHsULssCZgSbY",
        "L4dpa3n6V+Rs+m1cGNJszGrMZxGkE4Bdc23kPibi5MPshBK/deMsK4K8xPo3aJSf+q0eW6dSzCPrOmzFIN4qfcIJ8u",
        "VK31nNN5Px+CgyJ+CATNzki6CMnKkKP4nLfHIOIaTtYhAvs+NYK1wyvOgB3Bk=",
    ];

    const NOW: i64 = 1_796_000_000;
    const ISSUER: &str = "https://issuer.example";

    fn der(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_der(&der(EC_KEY))
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(&RSA_KEY.concat()))
    }

    /// The public JWK of `key`, under `kid`.
    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    /// An issuer publishing fixed keys.
    struct Published(HashMap<String, Jwk>);

    impl FetchKeys for Published {
        type Key = Jwk;

        async fn fetch(&self) -> Result<HashMap<String, Jwk>, String> {
            Ok(self.0.clone())
        }
    }

    fn verifier() -> Verifier<Published> {
        let keys = [
            ("ec-1", jwk(&ec_key(), Algorithm::ES256, "ec-1")),
            ("rsa-1", jwk(&rsa_key(), Algorithm::RS256, "rsa-1")),
        ];
        Verifier::new(
            Published(keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            Expected {
                issuer: ISSUER.into(),
                audience: "client-1".into(),
            },
        )
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": "client-1", "sub": "user-1", "name": "Ann", "exp": NOW + 600})
    }

    fn token(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    #[tokio::test]
    async fn es256_and_rs256_tokens_signed_by_the_issuer_are_accepted() {
        let verifier = verifier();
        for (alg, kid, key) in [
            (Algorithm::ES256, "ec-1", ec_key()),
            (Algorithm::RS256, "rsa-1", rsa_key()),
        ] {
            let identity = verifier
                .verify(&token(alg, kid, &key, &claims()), NOW)
                .await
                .unwrap();
            assert_eq!(
                (identity.user.as_str(), identity.name.as_str()),
                ("user-1", "Ann")
            );
        }
    }

    #[tokio::test]
    async fn a_changed_claim_breaks_the_signature() {
        let good = token(Algorithm::ES256, "ec-1", &ec_key(), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let forged_claims =
            json!({"iss": ISSUER, "aud": "client-1", "sub": "admin", "exp": NOW + 600});
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string());
        let forged = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(matches!(
            verifier().verify(&forged, NOW).await,
            Err(Refusal::Signature(_))
        ));
    }

    #[tokio::test]
    async fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let encode = |header: Value, claims: &Value, signature: &str| {
            let b64 =
                |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!("{}.{}.{signature}", b64(&header), b64(claims))
        };
        let none = encode(json!({"alg": "none", "kid": "ec-1"}), &claims(), "");
        assert!(verifier().verify(&none, NOW).await.is_err());
        // HS256 "signed" with the RSA key's public modulus as the secret: the classic confusion
        let public = jwk(&rsa_key(), Algorithm::RS256, "rsa-1");
        let AlgorithmParameters::RSA(rsa) = &public.algorithm else {
            unreachable!()
        };
        let hs = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("rsa-1".into());
            jsonwebtoken::encode(
                &header,
                &claims(),
                &EncodingKey::from_secret(rsa.n.as_bytes()),
            )
            .unwrap()
        };
        assert_eq!(
            verifier().verify(&hs, NOW).await,
            Err(Refusal::Algorithm("HS256".into()))
        );
    }

    #[tokio::test]
    async fn the_key_must_be_the_kind_the_algorithm_names() {
        // an RS256 header pointing at the EC key
        let forged = token(Algorithm::RS256, "ec-1", &rsa_key(), &claims());
        assert!(matches!(
            verifier().verify(&forged, NOW).await,
            Err(Refusal::KeyMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn a_token_naming_no_known_kid_or_no_token_at_all_is_refused() {
        let verifier = verifier();
        let no_kid = {
            let header = Header::new(Algorithm::ES256);
            jsonwebtoken::encode(&header, &claims(), &ec_key()).unwrap()
        };
        assert_eq!(
            verifier.verify(&no_kid, NOW).await,
            Err(Refusal::Missing("kid"))
        );
        let unknown = token(Algorithm::ES256, "ec-2", &ec_key(), &claims());
        assert!(matches!(
            verifier.verify(&unknown, NOW).await,
            Err(Refusal::Key(KeyError::Unknown { .. }))
        ));
        assert!(matches!(
            verifier.verify("not.a.token", NOW).await,
            Err(Refusal::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn the_claims_are_checked_after_the_signature() {
        let mut expired = claims();
        expired["exp"] = json!(NOW - 120);
        let token = token(Algorithm::ES256, "ec-1", &ec_key(), &expired);
        assert!(matches!(
            verifier().verify(&token, NOW).await,
            Err(Refusal::Expired { .. })
        ));
    }
}
