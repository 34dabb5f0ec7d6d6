//! The QR image of a ticket code, as a PNG any phone scanner reads.

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module: large enough for a phone at arm's length, small enough for e-mail.
pub const MODULE_PX: usize = 8;
/// The light border the QR specification requires around the symbol, in modules.
pub const QUIET_ZONE_MODULES: usize = 4;

/// The text does not fit in a QR code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("text does not fit in a QR code: {0}")]
pub struct QrError(String);

/// A 1-bit grayscale PNG of `code` as a QR code (error correction level M, byte mode), with a
/// quiet zone of [`QUIET_ZONE_MODULES`] and [`MODULE_PX`] pixels per module.
pub fn qr_png(code: &str) -> Result<Vec<u8>, QrError> {
    qr_png_labelled(code, "")
}

/// [`qr_png`] with `label` (the event's name) written under the code in capitals, Vietnamese
/// letters without their marks; no label: the square image alone.
pub fn qr_png_labelled(code: &str, label: &str) -> Result<Vec<u8>, QrError> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| QrError(e.to_string()))?;
    let modules = qr.width();
    let colors = qr.to_colors();
    let side_modules = modules + 2 * QUIET_ZONE_MODULES;
    let side_px = side_modules * MODULE_PX;
    // MODULE_PX is a multiple of 8, so every module is whole bytes of a row.
    let row_bytes = side_px / 8;
    let module_bytes = MODULE_PX / 8;
    let mut pixels = Vec::with_capacity(row_bytes * side_px);
    let mut row = vec![0u8; row_bytes];
    for y in 0..side_modules {
        for x in 0..side_modules {
            let dark = (QUIET_ZONE_MODULES..QUIET_ZONE_MODULES + modules).contains(&x)
                && (QUIET_ZONE_MODULES..QUIET_ZONE_MODULES + modules).contains(&y)
                && colors[(y - QUIET_ZONE_MODULES) * modules + (x - QUIET_ZONE_MODULES)]
                    == Color::Dark;
            // In 1-bit grayscale, 1 is white.
            let byte = if dark { 0x00 } else { 0xff };
            row[x * module_bytes..(x + 1) * module_bytes].fill(byte);
        }
        for _ in 0..MODULE_PX {
            pixels.extend_from_slice(&row);
        }
    }
    let side = u32::try_from(side_px).expect("a QR code is at most 177 modules wide");
    let mut height = side;
    if !label.trim().is_empty() {
        pixels.extend(crate::label::strip(label, side_px));
        height += u32::try_from(crate::label::STRIP_PX).expect("a small strip");
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, side, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder
        .write_header()
        .expect("writing a PNG header to memory cannot fail");
    writer
        .write_image_data(&pixels)
        .expect("the pixel buffer matches the declared size");
    writer
        .finish()
        .expect("finishing a PNG in memory cannot fail");
    Ok(png)
}

const _: () = assert!(MODULE_PX.is_multiple_of(8));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_the_expected_size() {
        let png = qr_png("HF1.test").unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        // "HF1.test" is a version 1 symbol: 21 modules.
        let side = ((21 + 2 * QUIET_ZONE_MODULES) * MODULE_PX) as u32;
        assert_eq!((info.width, info.height), (side, side));
    }

    #[test]
    fn a_label_adds_a_strip_under_the_code() {
        let png = qr_png_labelled("HF1.test", "Đêm nhạc Trịnh").unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let side = ((21 + 2 * QUIET_ZONE_MODULES) * MODULE_PX) as u32;
        assert_eq!(
            (info.width, info.height),
            (side, side + crate::label::STRIP_PX as u32)
        );
    }

    #[test]
    fn refuses_text_too_long_for_any_qr_code() {
        assert!(qr_png(&"x".repeat(3000)).is_err());
    }
}
