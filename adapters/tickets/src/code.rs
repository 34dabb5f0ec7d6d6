//! The ticket code: payload layout, signing, and verification with several keys.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::RngCore as _;
use uuid::Uuid;

/// The version tag every code starts with.
pub const PREFIX: &str = "HF1";
/// Key ids are 1 to this many characters of `A-Z a-z 0-9 - _`.
pub const KEY_ID_MAX: usize = 16;
/// Ticket types are 1 to this many bytes of UTF-8.
pub const TICKET_TYPE_MAX: usize = 64;

/// Domain separation: a signature over a ticket is never valid for anything else.
const CONTEXT: &[u8] = b"holdfast-ticket-v1\0";
/// No valid code is longer; longer input is refused before decoding.
const CODE_MAX: usize = 4 + 4 * (32 + 2 + KEY_ID_MAX + TICKET_TYPE_MAX).div_ceil(3) + 1 + 86;

/// What a ticket code says, signed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TicketPayload {
    pub ticket_id: Uuid,
    pub event_id: Uuid,
    pub ticket_type: String,
    /// The id of the key that signed it.
    pub key_id: String,
}

/// Why a key or a payload was refused (signing side; a programmer or settings error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("key id must be 1-{KEY_ID_MAX} characters of A-Z a-z 0-9 - _")]
    InvalidKeyId,
    #[error("ticket type must be 1-{TICKET_TYPE_MAX} bytes")]
    InvalidTicketType,
    #[error("the payload names key {payload:?} but the signer holds key {signer:?}")]
    KeyIdMismatch { signer: String, payload: String },
    #[error("a key must be 32 bytes in hex and, if public, a valid strong Ed25519 point")]
    InvalidKey,
}

/// Why a code does not admit anyone. Check-in answers all of them with `invalid-ticket`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTicket {
    #[error("not a ticket code")]
    Malformed,
    #[error("signed with unknown key {0:?}")]
    UnknownKey(String),
    #[error("signature does not match")]
    BadSignature,
}

impl TicketPayload {
    fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        if !is_key_id(&self.key_id) {
            return Err(Error::InvalidKeyId);
        }
        if !(1..=TICKET_TYPE_MAX).contains(&self.ticket_type.len()) {
            return Err(Error::InvalidTicketType);
        }
        let mut bytes = Vec::with_capacity(34 + self.key_id.len() + self.ticket_type.len());
        bytes.extend_from_slice(self.ticket_id.as_bytes());
        bytes.extend_from_slice(self.event_id.as_bytes());
        for field in [&self.key_id, &self.ticket_type] {
            bytes.push(u8::try_from(field.len()).expect("length checked above"));
            bytes.extend_from_slice(field.as_bytes());
        }
        Ok(bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (ticket_id, rest) = bytes.split_first_chunk::<16>()?;
        let (event_id, rest) = rest.split_first_chunk::<16>()?;
        let (key_id, rest) = take_field(rest)?;
        let (ticket_type, rest) = take_field(rest)?;
        let payload = Self {
            ticket_id: Uuid::from_bytes(*ticket_id),
            event_id: Uuid::from_bytes(*event_id),
            ticket_type,
            key_id,
        };
        // Exactly one encoding per payload: no trailing bytes, fields within their limits.
        let canonical = rest.is_empty()
            && is_key_id(&payload.key_id)
            && (1..=TICKET_TYPE_MAX).contains(&payload.ticket_type.len());
        canonical.then_some(payload)
    }
}

fn take_field(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (len, rest) = bytes.split_first()?;
    let (field, rest) = rest.split_at_checked(usize::from(*len))?;
    Some((String::from_utf8(field.to_vec()).ok()?, rest))
}

fn is_key_id(key_id: &str) -> bool {
    (1..=KEY_ID_MAX).contains(&key_id.len())
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    [CONTEXT, payload].concat()
}

/// Signs tickets with one Ed25519 key.
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key from the operating system's random source.
    pub fn generate(key_id: impl Into<String>) -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let signer = Self::from_seed(key_id.into(), &seed);
        seed.fill(0);
        signer
    }

    /// The key whose 32-byte secret seed is `seed_hex` (as [`Signer::seed_hex`] wrote it).
    pub fn from_seed_hex(key_id: impl Into<String>, seed_hex: &str) -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(seed_hex.trim(), &mut seed).map_err(|_| Error::InvalidKey)?;
        let signer = Self::from_seed(key_id.into(), &seed);
        seed.fill(0);
        signer
    }

    fn from_seed(key_id: String, seed: &[u8; 32]) -> Result<Self, Error> {
        if !is_key_id(&key_id) {
            return Err(Error::InvalidKeyId);
        }
        Ok(Self {
            key_id,
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The secret seed in hex, to keep in settings. Treat it as a password.
    pub fn seed_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The public key in hex, for [`Verifier::add_public_key_hex`].
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A payload naming this signer's key.
    pub fn payload(
        &self,
        ticket_id: Uuid,
        event_id: Uuid,
        ticket_type: impl Into<String>,
    ) -> TicketPayload {
        TicketPayload {
            ticket_id,
            event_id,
            ticket_type: ticket_type.into(),
            key_id: self.key_id.clone(),
        }
    }

    /// The ticket code for `payload`, which must name this signer's key.
    pub fn sign(&self, payload: &TicketPayload) -> Result<String, Error> {
        if payload.key_id != self.key_id {
            return Err(Error::KeyIdMismatch {
                signer: self.key_id.clone(),
                payload: payload.key_id.clone(),
            });
        }
        let bytes = payload.to_bytes()?;
        let signature = ed25519_dalek::Signer::sign(&self.key, &signed_message(&bytes));
        Ok(format!(
            "{PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(&bytes),
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// Verifies ticket codes against the public keys it holds, by key id.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier trusting these signers' keys.
    pub fn from_signers<'a>(signers: impl IntoIterator<Item = &'a Signer>) -> Self {
        let keys = signers
            .into_iter()
            .map(|s| (s.key_id.clone(), s.verifying_key()))
            .collect();
        Self { keys }
    }

    /// Trusts `key` for codes naming `key_id`, replacing any key with that id.
    pub fn add_key(&mut self, key_id: impl Into<String>, key: VerifyingKey) -> Result<(), Error> {
        let key_id = key_id.into();
        if !is_key_id(&key_id) {
            return Err(Error::InvalidKeyId);
        }
        if key.is_weak() {
            return Err(Error::InvalidKey);
        }
        self.keys.insert(key_id, key);
        Ok(())
    }

    /// [`Verifier::add_key`] with the public key in hex (as [`Signer::public_key_hex`] wrote it).
    pub fn add_public_key_hex(
        &mut self,
        key_id: impl Into<String>,
        public_hex: &str,
    ) -> Result<(), Error> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(public_hex.trim(), &mut bytes).map_err(|_| Error::InvalidKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| Error::InvalidKey)?;
        self.add_key(key_id, key)
    }

    /// Stops trusting a key; its tickets stop verifying.
    pub fn remove_key(&mut self, key_id: &str) -> bool {
        self.keys.remove(key_id).is_some()
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The payload of `code` if it is well formed and signed by the key it names.
    pub fn verify(&self, code: &str) -> Result<TicketPayload, InvalidTicket> {
        if code.len() > CODE_MAX {
            return Err(InvalidTicket::Malformed);
        }
        let mut parts = code.split('.');
        let (Some(PREFIX), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTicket::Malformed);
        };
        // The engine refuses padding and non-zero trailing bits: one text per code.
        let payload_bytes = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| InvalidTicket::Malformed)?;
        let signature_bytes: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(InvalidTicket::Malformed)?;
        let payload = TicketPayload::from_bytes(&payload_bytes).ok_or(InvalidTicket::Malformed)?;
        let key = self
            .keys
            .get(&payload.key_id)
            .ok_or_else(|| InvalidTicket::UnknownKey(payload.key_id.clone()))?;
        key.verify_strict(
            &signed_message(&payload_bytes),
            &Signature::from_bytes(&signature_bytes),
        )
        .map_err(|_| InvalidTicket::BadSignature)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED_A: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn signer(key_id: &str) -> Signer {
        Signer::generate(key_id).unwrap()
    }

    fn sample(signer: &Signer) -> TicketPayload {
        signer.payload(
            Uuid::from_u128(0x0190_a5e2_7c1e_7d3a_9f00_0000_0000_0042),
            Uuid::from_u128(0x0190_a5e2_0000_7000_8000_0000_0000_0007),
            "Standing",
        )
    }

    fn parts(code: &str) -> (Vec<u8>, Vec<u8>) {
        let mut it = code.split('.').skip(1);
        (
            URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap(),
            URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap(),
        )
    }

    fn join(payload: &[u8], signature: &[u8]) -> String {
        format!(
            "{PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    #[test]
    fn round_trip() {
        let signer = signer("k1");
        let payload = sample(&signer);
        let code = signer.sign(&payload).unwrap();
        assert!(code.starts_with("HF1.") && code.len() < 160, "{code}");
        assert_eq!(Verifier::from_signers([&signer]).verify(&code), Ok(payload));
    }

    #[test]
    fn known_seed_gives_the_rfc_8032_public_key_and_a_stable_code() {
        // RFC 8032 section 7.1, test 1: this seed's public key.
        let signer = Signer::from_seed_hex("k1", SEED_A).unwrap();
        assert_eq!(
            signer.public_key_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(signer.seed_hex(), SEED_A);
        // Ed25519 is deterministic: the same payload always signs to the same code.
        let payload = sample(&signer);
        assert_eq!(signer.sign(&payload), signer.sign(&payload));
        let mut verifier = Verifier::new();
        verifier
            .add_public_key_hex("k1", &signer.public_key_hex())
            .unwrap();
        assert!(verifier.verify(&signer.sign(&payload).unwrap()).is_ok());
        assert!(!format!("{signer:?}").contains(SEED_A));
    }

    #[test]
    fn altered_payloads_are_refused() {
        let signer = signer("k1");
        let verifier = Verifier::from_signers([&signer]);
        let code = signer.sign(&sample(&signer)).unwrap();
        let (payload, signature) = parts(&code);
        // Every single-bit flip anywhere in the payload.
        for i in 0..payload.len() * 8 {
            let mut altered = payload.clone();
            altered[i / 8] ^= 1 << (i % 8);
            let result = verifier.verify(&join(&altered, &signature));
            assert!(result.is_err(), "bit {i}: {result:?}");
        }
        // A well-formed payload for another ticket with the original signature.
        let mut other = sample(&signer);
        other.ticket_type = "VIP".to_owned();
        let forged = join(&other.to_bytes().unwrap(), &signature);
        assert_eq!(verifier.verify(&forged), Err(InvalidTicket::BadSignature));
    }

    #[test]
    fn forged_signatures_are_refused() {
        let signer = signer("k1");
        let verifier = Verifier::from_signers([&signer]);
        let code = signer.sign(&sample(&signer)).unwrap();
        let (payload, signature) = parts(&code);
        for i in 0..signature.len() * 8 {
            let mut altered = signature.clone();
            altered[i / 8] ^= 1 << (i % 8);
            assert!(
                verifier.verify(&join(&payload, &altered)).is_err(),
                "bit {i}"
            );
        }
        // An attacker's own key, claiming the trusted key id.
        let attacker = signer_with_id_of(&signer);
        let forged = attacker.sign(&sample(&attacker)).unwrap();
        assert_eq!(verifier.verify(&forged), Err(InvalidTicket::BadSignature));
        assert_eq!(
            verifier.verify(&join(&payload, &[0u8; 64])),
            Err(InvalidTicket::BadSignature)
        );
    }

    fn signer_with_id_of(signer: &Signer) -> Signer {
        Signer::generate(signer.key_id()).unwrap()
    }

    #[test]
    fn unknown_key_ids_are_refused() {
        let trusted = signer("k1");
        let stranger = signer("k9");
        let verifier = Verifier::from_signers([&trusted]);
        let code = stranger.sign(&sample(&stranger)).unwrap();
        assert_eq!(
            verifier.verify(&code),
            Err(InvalidTicket::UnknownKey("k9".to_owned()))
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let signer = signer("k1");
        let verifier = Verifier::from_signers([&signer]);
        let code = signer.sign(&sample(&signer)).unwrap();
        let (payload, signature) = parts(&code);
        let (_, rest) = code.split_once('.').unwrap();
        let mut with_trailing = payload.clone();
        with_trailing.push(0);
        let cases = [
            String::new(),
            "HF1".to_owned(),
            "HF1..".to_owned(),
            format!("HF2.{rest}"),
            format!("hf1.{rest}"),
            format!("{code}."),
            format!("{code}.x"),
            code.replacen('.', "", 1),
            format!("{code}="),
            format!("{code}A"),
            code.replace('.', ".="),
            join(&payload[..payload.len() - 1], &signature),
            join(&with_trailing, &signature),
            join(&payload, &signature[..63]),
            join(&[], &signature),
            format!("HF1.{}+.{}", &code[4..10], "A"),
            "x".repeat(10_000),
        ];
        for case in cases {
            assert_eq!(
                verifier.verify(&case),
                Err(InvalidTicket::Malformed),
                "{case:?}"
            );
        }
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        let signer = signer("k1");
        let verifier = Verifier::from_signers([&signer]);
        let code = signer.sign(&sample(&signer)).unwrap();
        // 64 signature bytes end with 2 spare bits in base64: setting them must not verify.
        let last = code.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).unwrap();
        let sibling = alphabet.chars().nth(index ^ 1).unwrap();
        let mut altered = code.clone();
        altered.pop();
        altered.push(sibling);
        assert_eq!(verifier.verify(&altered), Err(InvalidTicket::Malformed));
    }

    #[test]
    fn rotation_with_two_keys() {
        let old = signer("2025a");
        let new = signer("2025b");
        let both = Verifier::from_signers([&old, &new]);
        let old_code = old.sign(&sample(&old)).unwrap();
        let new_code = new.sign(&sample(&new)).unwrap();
        assert_eq!(both.verify(&old_code).unwrap().key_id, "2025a");
        assert_eq!(both.verify(&new_code).unwrap().key_id, "2025b");

        // A code signed by the old key but naming the new one.
        let mut swapped = sample(&old);
        swapped.key_id = "2025b".to_owned();
        let bytes = swapped.to_bytes().unwrap();
        let signature = ed25519_dalek::Signer::sign(&old.key, &signed_message(&bytes));
        assert_eq!(
            both.verify(&join(&bytes, &signature.to_bytes())),
            Err(InvalidTicket::BadSignature)
        );

        let mut retired = both.clone();
        assert!(retired.remove_key("2025a"));
        assert_eq!(
            retired.verify(&old_code),
            Err(InvalidTicket::UnknownKey("2025a".to_owned()))
        );
        assert!(retired.verify(&new_code).is_ok());
    }

    #[test]
    fn refuses_bad_keys_and_payloads() {
        assert_eq!(Signer::generate("").unwrap_err(), Error::InvalidKeyId);
        assert_eq!(Signer::generate("k.1").unwrap_err(), Error::InvalidKeyId);
        assert_eq!(
            Signer::generate("k".repeat(KEY_ID_MAX + 1)).unwrap_err(),
            Error::InvalidKeyId
        );
        assert_eq!(
            Signer::from_seed_hex("k1", "abcd").unwrap_err(),
            Error::InvalidKey
        );
        let mut verifier = Verifier::new();
        // The identity point: a small-order (weak) key.
        let identity = format!("01{}", "00".repeat(31));
        assert_eq!(
            verifier.add_public_key_hex("k1", &identity),
            Err(Error::InvalidKey)
        );
        assert_eq!(
            verifier.add_public_key_hex("k1", "zz"),
            Err(Error::InvalidKey)
        );

        let signer = signer("k1");
        let mut payload = sample(&signer);
        payload.ticket_type.clear();
        assert_eq!(signer.sign(&payload), Err(Error::InvalidTicketType));
        payload.ticket_type = "x".repeat(TICKET_TYPE_MAX + 1);
        assert_eq!(signer.sign(&payload), Err(Error::InvalidTicketType));
        payload = sample(&signer);
        payload.key_id = "k2".to_owned();
        assert!(matches!(
            signer.sign(&payload),
            Err(Error::KeyIdMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_payloads_round_trip_and_any_changed_character_is_refused(
            ticket_id in any::<u128>(),
            event_id in any::<u128>(),
            ticket_type in "[\\PC]{1,16}",
            position in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_.=+/-]",
        ) {
            prop_assume!(ticket_type.len() <= TICKET_TYPE_MAX);
            let signer = Signer::from_seed_hex("k1", SEED_A).unwrap();
            let verifier = Verifier::from_signers([&signer]);
            let payload = signer.payload(Uuid::from_u128(ticket_id), Uuid::from_u128(event_id), ticket_type);
            let code = signer.sign(&payload).unwrap();
            prop_assert!(code.len() <= CODE_MAX);
            prop_assert_eq!(verifier.verify(&code), Ok(payload));

            let i = position.index(code.len());
            let mut altered: Vec<char> = code.chars().collect();
            prop_assume!(altered[i].to_string() != replacement);
            altered[i] = replacement.chars().next().unwrap();
            let altered: String = altered.into_iter().collect();
            prop_assert!(verifier.verify(&altered).is_err(), "{} verified", altered);
        }
    }
}
