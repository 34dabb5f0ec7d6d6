//! A real decoder (zbarimg, Debian's zbar-tools) reads the PNG back as the ticket code.

use std::path::Path;
use std::process::Command;

use holdfast_tickets::{Signer, Verifier, qr_png};
use uuid::Uuid;

/// Arguments of every zbarimg run: QR codes only. With every symbology on, zbarimg now and
/// then also reads a one-dimensional symbol (Codabar, `A00C`) among a code's modules.
const ZBARIMG_ARGS: [&str; 4] = ["--raw", "-q", "-Sdisable", "-Sqrcode.enable"];

/// The one text zbarimg reads in `png`; fails unless it reads exactly one symbol.
fn zbarimg(png: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticket.png");
    std::fs::write(&path, png).unwrap();
    let output = match Command::new("zbarimg")
        .args(ZBARIMG_ARGS)
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
    let text = String::from_utf8(output.stdout).unwrap();
    let symbol = text.strip_suffix('\n').unwrap_or(&text);
    assert!(
        !symbol.contains('\n'),
        "zbarimg read more than one symbol: {text:?}"
    );
    symbol.to_owned()
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

/// Many random codes: each decodes to exactly itself, one line, nothing else.
#[test]
fn zbarimg_reads_exactly_one_symbol_per_random_code() {
    let signer = Signer::generate("k1").unwrap();
    for i in 0..100 {
        let ticket_type = format!("T{i}-{}", Uuid::new_v4().simple());
        let code = signer
            .sign(&signer.payload(Uuid::new_v4(), Uuid::new_v4(), &ticket_type))
            .unwrap();
        assert_eq!(zbarimg(&qr_png(&code).unwrap()), code);
    }
}

/// A ticket's QR code with a Codabar symbol beside it: with every symbology on zbarimg reads
/// both (the CI flake); the helper reads the QR code alone.
#[test]
fn zbarimg_helper_ignores_one_dimensional_symbols() {
    let signer = Signer::generate("k1").unwrap();
    let code = signer
        .sign(&signer.payload(Uuid::now_v7(), Uuid::now_v7(), "GA"))
        .unwrap();
    let png = with_codabar_below(&qr_png(&code).unwrap(), "A0123456789B");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.png");
    std::fs::write(&path, &png).unwrap();
    let every = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    let every = String::from_utf8(every.stdout).unwrap();
    assert!(
        every.lines().any(|line| line == code) && every.lines().any(|line| line == "A0123456789B"),
        "with every symbology zbarimg reads both symbols: {every:?}"
    );

    assert_eq!(zbarimg(&png), code);
}

/// `qr` (a 1-bit grayscale PNG) on top of a Codabar bar code of `text` (start and stop
/// characters included), as an 8-bit grayscale PNG.
fn with_codabar_below(qr: &[u8], text: &str) -> Vec<u8> {
    // Codabar: per character 4 bars and 3 spaces, alternating, 1 = wide.
    fn widths(c: char) -> [u8; 7] {
        let pattern = match c {
            '0' => "0000011",
            '1' => "0000110",
            '2' => "0001001",
            '3' => "1100000",
            '4' => "0010010",
            '5' => "1000010",
            '6' => "0100001",
            '7' => "0100100",
            '8' => "0110000",
            '9' => "1001000",
            'A' => "0011010",
            'B' => "0101001",
            'C' => "0001011",
            'D' => "0001110",
            other => panic!("no Codabar pattern for {other:?}"),
        };
        let mut out = [0; 7];
        for (w, bit) in out.iter_mut().zip(pattern.bytes()) {
            *w = if bit == b'1' { 9 } else { 3 };
        }
        out
    }
    let mut reader = png::Decoder::new(std::io::Cursor::new(qr))
        .read_info()
        .unwrap();
    let info = reader.info().clone();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Grayscale, png::BitDepth::One)
    );
    let mut packed = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut packed).unwrap();
    let (qr_w, qr_h) = (info.width as usize, info.height as usize);
    let row_bytes = qr_w.div_ceil(8);

    // The bar code's row: a quiet zone, the characters with a narrow gap between, a quiet zone.
    let mut bars = vec![255u8; 40];
    for c in text.chars() {
        for (i, w) in widths(c).into_iter().enumerate() {
            let shade = if i % 2 == 0 { 0 } else { 255 };
            bars.extend(std::iter::repeat_n(shade, usize::from(w)));
        }
        bars.extend([255; 3]);
    }
    bars.extend([255; 40]);

    let width = qr_w.max(bars.len());
    let (bar_h, gap) = (120, 40);
    let height = qr_h + gap + bar_h + gap;
    let mut pixels = vec![255u8; width * height];
    for y in 0..qr_h {
        for x in 0..qr_w {
            let bit = packed[y * row_bytes + x / 8] >> (7 - x % 8) & 1;
            pixels[y * width + x] = if bit == 1 { 255 } else { 0 };
        }
    }
    for y in qr_h + gap..qr_h + gap + bar_h {
        pixels[y * width..y * width + bars.len()].copy_from_slice(&bars);
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}
