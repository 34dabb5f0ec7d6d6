//! Admission tokens of the waiting room: what `GET /v1/events/{id}/queue/me` hands an admitted
//! buyer and `POST /v1/events/{id}/holds` asks for in `Holdfast-Admission`.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, claims))` with claims
//! `{"v":1,"event","sub","n","exp"}`: the event, the buyer, the number of the admission in the
//! event's queue and its expiry (Unix seconds). The key is derived from the node's token secret
//! (and, during a rotation, the previous one) under its own label, so an admission token is
//! never an access token or the other way round. The gateway checks the signature, the event,
//! the buyer and the expiry; the event's actor then checks that admission `n` is the buyer's
//! and still running, so a token outlives neither its admission nor a purchase.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use holdfast_actors::{EventId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The claims of an admission token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    v: u8,
    pub event: EventId,
    pub sub: UserId,
    /// The admission's number in the event's queue.
    pub n: u64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why an admission token is refused (403 `not-admitted` says so).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the admission token is malformed")]
    Malformed,
    #[error("the admission token's signature is not valid")]
    BadSignature,
    #[error("the admission token is for another event")]
    OtherEvent,
    #[error("the admission token is another buyer's")]
    OtherBuyer,
    #[error("the admission expired; join the queue again")]
    Expired,
}

/// The keys admission tokens are signed with (the first) and accepted with (all).
#[derive(Clone)]
pub struct AdmissionKeys(std::sync::Arc<Vec<[u8; 32]>>);

impl std::fmt::Debug for AdmissionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionKeys").finish_non_exhaustive()
    }
}

impl AdmissionKeys {
    /// Keys derived from the token secrets: the current one first.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let keys = secrets
            .into_iter()
            .map(|secret| {
                Sha256::new()
                    .chain_update(b"holdfast admission token key\0")
                    .chain_update(secret)
                    .finalize()
                    .into()
            })
            .collect();
        Self(std::sync::Arc::new(keys))
    }

    /// A token for admission `number` of `user` to `event`, until `expires_at` (Unix seconds).
    pub fn issue(&self, event: EventId, user: UserId, number: u64, expires_at: i64) -> String {
        let claims = Admission {
            v: 1,
            event,
            sub: user,
            n: number,
            exp: expires_at,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let tag = URL_SAFE_NO_PAD.encode(mac(&self.0[0], body.as_bytes()).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The admission `token` grants `user` on `event` at `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        event: EventId,
        user: UserId,
        now: i64,
    ) -> Result<Admission, AdmissionError> {
        let (body, tag) = token.split_once('.').ok_or(AdmissionError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| AdmissionError::Malformed)?;
        // verify_slice compares in constant time.
        if !self
            .0
            .iter()
            .any(|key| mac(key, body.as_bytes()).verify_slice(&tag).is_ok())
        {
            return Err(AdmissionError::BadSignature);
        }
        let claims: Admission = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .filter(|c: &Admission| c.v == 1)
            .ok_or(AdmissionError::Malformed)?;
        if claims.event != event {
            return Err(AdmissionError::OtherEvent);
        }
        if claims.sub != user {
            return Err(AdmissionError::OtherBuyer);
        }
        if claims.exp <= now {
            return Err(AdmissionError::Expired);
        }
        Ok(claims)
    }
}

fn mac(key: &[u8; 32], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_signature_event_buyer_and_expiry() {
        let keys = AdmissionKeys::new([b"secret one".as_slice()]);
        let (event, buyer) = (EventId::generate(), UserId::generate());
        let token = keys.issue(event, buyer, 7, 1_000);
        let ok = keys.verify(&token, event, buyer, 999).expect("valid");
        assert_eq!((ok.n, ok.exp), (7, 1_000));
        assert_eq!(
            keys.verify(&token, event, buyer, 1_000),
            Err(AdmissionError::Expired)
        );
        assert_eq!(
            keys.verify(&token, EventId::generate(), buyer, 0),
            Err(AdmissionError::OtherEvent)
        );
        assert_eq!(
            keys.verify(&token, event, UserId::generate(), 0),
            Err(AdmissionError::OtherBuyer)
        );
        let other = AdmissionKeys::new([b"secret two".as_slice()]);
        assert_eq!(
            other.verify(&token, event, buyer, 0),
            Err(AdmissionError::BadSignature)
        );
        // A body changed after signing (a later expiry) fails the signature.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = Admission {
            v: 1,
            event,
            sub: buyer,
            n: 7,
            exp: 9_999,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            keys.verify(&format!("{body}.{tag}"), event, buyer, 0),
            Err(AdmissionError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b", "!!.??"] {
            assert!(keys.verify(junk, event, buyer, 0).is_err(), "{junk}");
        }
        // During a rotation the previous secret's tokens still pass.
        let rotated = AdmissionKeys::new([b"secret two".as_slice(), b"secret one".as_slice()]);
        assert!(rotated.verify(&token, event, buyer, 0).is_ok());
    }
}
