//! The signing primitives shared by payment URLs, return/IPN verification and the simulator.

use hmac::{Hmac, Mac};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

/// Encodes like PHP's `urlencode` (VNPAY's PHP demo): `A-Z a-z 0-9 - _ .` stay, a space
/// becomes `+`, every other byte of the UTF-8 text becomes `%XX` (uppercase hex).
///
/// `form_urlencoded` is the WHATWG `application/x-www-form-urlencoded` serializer, which
/// differs from PHP only by keeping `*`.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('*', "%2A")
}

/// The text VNPAY signs: the parameters sorted by key, `key=value` joined by `&`, keys and
/// values [`encode`]d. It is also the query string sent on the wire.
pub fn sign_data<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (key, value) in sorted {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(key));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// Lowercase hex HMAC-SHA512 of `data` keyed with `secret`.
pub fn hmac_sha512_hex(secret: &str, data: &str) -> String {
    hex::encode(mac(secret, data).finalize().into_bytes())
}

/// Whether `hash_hex` (either case) is the HMAC-SHA512 of `data` under `secret`. The tag
/// comparison is constant-time (`Mac::verify_slice`, built on `subtle`).
pub fn verify_hmac_sha512_hex(secret: &str, data: &str, hash_hex: &str) -> bool {
    match hex::decode(hash_hex) {
        Ok(tag) => mac(secret, data).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}

/// The signed query string: [`sign_data`] followed by `&vnp_SecureHash=<hex>`.
pub fn signed_query<K: AsRef<str>, V: AsRef<str>>(secret: &str, params: &[(K, V)]) -> String {
    let data = sign_data(params);
    let hash = hmac_sha512_hex(secret, &data);
    format!("{data}&vnp_SecureHash={hash}")
}

fn mac(secret: &str, data: &str) -> HmacSha512 {
    let mut mac =
        HmacSha512::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(data.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_php_urlencode() {
        let printable: String = (0x20u8..0x7f).map(char::from).collect();
        // PHP: urlencode(implode('', array_map('chr', range(0x20, 0x7e))))
        let expected = "+%21%22%23%24%25%26%27%28%29%2A%2B%2C-.%2F0123456789%3A%3B%3C%3D%3E%3F%40\
                        ABCDEFGHIJKLMNOPQRSTUVWXYZ%5B%5C%5D%5E_%60abcdefghijklmnopqrstuvwxyz%7B%7C%7D%7E";
        assert_eq!(encode(&printable), expected);
        assert_eq!(encode("Việt"), "Vi%E1%BB%87t");
    }

    #[test]
    fn sign_data_sorts_by_key() {
        let params = [
            ("vnp_TxnRef", "a b"),
            ("vnp_Amount", "100"),
            ("vnp_Command", "pay"),
        ];
        assert_eq!(
            sign_data(&params),
            "vnp_Amount=100&vnp_Command=pay&vnp_TxnRef=a+b"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231, test case 2 (key "Jefe"), HMAC-SHA-512.
        assert_eq!(
            hmac_sha512_hex("Jefe", "what do ya want for nothing?"),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a\
             6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn verify_accepts_either_case_and_rejects_everything_else() {
        let hash = hmac_sha512_hex("secret", "data");
        assert!(verify_hmac_sha512_hex("secret", "data", &hash));
        assert!(verify_hmac_sha512_hex(
            "secret",
            "data",
            &hash.to_uppercase()
        ));
        assert!(!verify_hmac_sha512_hex("secret", "datA", &hash));
        assert!(!verify_hmac_sha512_hex("secreT", "data", &hash));
        assert!(!verify_hmac_sha512_hex("secret", "data", &hash[..64]));
        assert!(!verify_hmac_sha512_hex("secret", "data", "zz"));
        assert!(!verify_hmac_sha512_hex("secret", "data", ""));
    }
}
