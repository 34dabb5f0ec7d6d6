//! Secrets this project itself publishes (demo values, placeholders in the deployment files,
//! well-known test vectors), which a node refuses to run with: anyone can read them, so anyone
//! could forge payments, tokens or tickets signed with them. One list, checked wherever a
//! secret enters a node, whatever the backend.

/// Published secrets, compared after trimming whitespace (hex case-insensitively).
const PUBLISHED: &[&str] = &[
    // The former demo VNPAY merchant secret (the embedded default now generates its own).
    "holdfast-demo-secret-for-vnpay-sim-only",
    // Placeholders in deploy/compose.yaml (before it generated its secrets) and
    // deploy/k8s/base/secret.example.yaml.
    "change-me-to-32-or-more-random-bytes!!",
    "change-me-to-the-secret-from-vnpay",
    "0000000000000000000000000000000000000000000000000000000000000000",
    // Ed25519 seeds of RFC 8032 section 7.1, tests 1 to 3 (the first is in our own tests).
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    // Fixed secrets the benchmark scripts used before they generated theirs.
    "cluster-bench-secret-0123456789abcdef0123",
    "bench-vnpay-secret",
    "bench-secret-0123456789abcdef0123456789",
];

/// Whether `secret` is one this project publishes.
pub fn is_published(secret: &[u8]) -> bool {
    let secret = secret.trim_ascii();
    PUBLISHED
        .iter()
        .any(|p| p.as_bytes().eq_ignore_ascii_case(secret))
}

/// Refuses a published secret, naming the `setting` it came from.
pub fn refuse_published(setting: &str, secret: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !is_published(secret),
        "{setting} is a secret published with Holdfast (a demo value, a placeholder of the \
         deployment files or a test vector): anyone could sign with it. Generate your own, \
         e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`"
    );
    Ok(())
}

/// Refuses a trusted ticket public key whose secret seed is published: anyone could sign
/// tickets that check-in would admit.
pub fn refuse_published_public_key(setting: &str, public_key_hex: &str) -> anyhow::Result<()> {
    let published = PUBLISHED.iter().any(|seed| {
        holdfast_tickets::Signer::from_seed_hex("k", seed).is_ok_and(|s| {
            s.public_key_hex()
                .eq_ignore_ascii_case(public_key_hex.trim())
        })
    });
    anyhow::ensure!(
        !published,
        "{setting} trusts the public key of a secret seed published with Holdfast (a test \
         vector or placeholder): anyone could sign tickets it admits"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every secret placeholder of the deployment files is refused.
    #[test]
    fn deployment_placeholders_are_on_the_list() {
        let example = include_str!("../../deploy/k8s/base/secret.example.yaml");
        let mut found = 0;
        for line in example.lines() {
            let Some((key, value)) = line.trim().split_once(": ") else {
                continue;
            };
            if ["jwt-secret", "vnpay-hash-secret", "ticket-signing-key"].contains(&key) {
                found += 1;
                let value = value.trim_matches('"');
                assert!(
                    is_published(value.as_bytes()),
                    "{key}: {value} is not refused"
                );
            }
        }
        assert_eq!(found, 3, "secret.example.yaml names its three secrets");
        let compose = include_str!("../../deploy/compose.yaml");
        for p in PUBLISHED {
            assert!(!compose.contains(p), "deploy/compose.yaml publishes {p}");
        }
    }

    #[test]
    fn published_secrets_are_refused_in_any_case_and_spacing() {
        assert!(is_published(b"holdfast-demo-secret-for-vnpay-sim-only"));
        assert!(is_published(
            b" 9D61B19DEFFD5A60BA844AF492EC2CC44449C5697B326919703BAC031CAE7F60\n"
        ));
        assert!(!is_published(b"a-secret-nobody-has-seen-0123456789abcdef"));
        let error = refuse_published(
            "HOLDFAST_VNPAY_HASH_SECRET",
            b"change-me-to-the-secret-from-vnpay",
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("HOLDFAST_VNPAY_HASH_SECRET "),
            "{error}"
        );
        // RFC 8032 test 1's public key.
        assert!(
            refuse_published_public_key(
                "HOLDFAST_TICKET_TRUSTED_KEYS",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
            )
            .is_err()
        );
    }
}
