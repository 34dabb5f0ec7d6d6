//! A real decoder (zbarimg, Debian's zbar-tools) reads the PNG back as the ticket code.

use std::path::Path;
use std::process::Command;

use holdfast_tickets::{Signer, Verifier, qr_png};
use uuid::Uuid;

fn zbarimg(png: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticket.png");
    std::fs::write(&path, png).unwrap();
    let output = match Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(Path::new(&path))
        .output()
    {
        Ok(output) => output,
        Err(error) => panic!(
            "zbarimg could not run ({error}): install zbar-tools \
             (`apt-get install -y zbar-tools`); the project's test script installs it"
        ),
    };
    assert!(
        output.status.success(),
        "zbarimg found no code: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

#[test]
fn zbarimg_reads_signed_ticket_codes() {
    let signer = Signer::generate("k2025").unwrap();
    let verifier = Verifier::from_signers([&signer]);
    for ticket_type in ["GA", "VIP Standing - Khu A", "Vé ưu tiên"] {
        let payload = signer.payload(Uuid::now_v7(), Uuid::now_v7(), ticket_type);
        let code = signer.sign(&payload).unwrap();
        let decoded = zbarimg(&qr_png(&code).unwrap());
        assert_eq!(decoded, code);
        assert_eq!(verifier.verify(&decoded), Ok(payload));
    }
}
