//! A line of text under a ticket's QR code (the event's name), in a 5×7 bitmap font: capital
//! Latin letters, digits and a little punctuation, Vietnamese letters written without their
//! marks (no font file, no rendering dependency).

/// Rows of a glyph, top first, the leftmost of 5 pixels the highest bit.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '/' => [0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10],
        '&' => [0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d],
        ' ' => [0; 7],
        _ => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// `text` as the font writes it: capitals, Vietnamese letters without their marks.
pub fn fold(text: &str) -> String {
    const FOLDS: &[(&str, char)] = &[
        ("aàáảãạăằắẳẵặâầấẩẫậ", 'A'),
        ("eèéẻẽẹêềếểễệ", 'E'),
        ("iìíỉĩị", 'I'),
        ("oòóỏõọôồốổỗộơờớởỡợ", 'O'),
        ("uùúủũụưừứửữự", 'U'),
        ("yỳýỷỹỵ", 'Y'),
        ("dđ", 'D'),
    ];
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            FOLDS
                .iter()
                .find(|(from, _)| from.contains(c))
                .map_or(c.to_ascii_uppercase(), |(_, to)| *to)
        })
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect()
}

/// Pixels per font pixel.
pub(crate) const SCALE: usize = 2;
/// A glyph's advance: 5 pixels and one of space, scaled.
const ADVANCE: usize = 6 * SCALE;
/// The strip's height: the glyphs and a margin above and below.
pub(crate) const STRIP_PX: usize = 7 * SCALE + 2 * 8;

/// Rows of 1-bit pixels (1 is white), `width` wide, with `text` centred on them; text wider
/// than the strip is cut with `...`.
pub(crate) fn strip(text: &str, width: usize) -> Vec<u8> {
    let row_bytes = width.div_ceil(8);
    let mut pixels = vec![0xffu8; row_bytes * STRIP_PX];
    let fits = width.saturating_sub(2 * 8) / ADVANCE;
    let mut chars: Vec<char> = fold(text).trim().chars().collect();
    if chars.len() > fits {
        chars.truncate(fits.saturating_sub(3));
        chars.extend("...".chars());
    }
    let text_px = chars.len() * ADVANCE;
    let left = width.saturating_sub(text_px) / 2;
    for (i, c) in chars.iter().enumerate() {
        for (gy, bits) in glyph(*c).iter().enumerate() {
            for gx in 0..5 {
                if bits & (0x10 >> gx) == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let x = left + i * ADVANCE + gx * SCALE + dx;
                        let y = 8 + gy * SCALE + dy;
                        if x < width {
                            pixels[y * row_bytes + x / 8] &= !(0x80 >> (x % 8));
                        }
                    }
                }
            }
        }
    }
    pixels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_letters_lose_their_marks() {
        let cases = [
            ("Đêm nhạc Trịnh", "DEM NHAC TRINH"),
            ("Hồ Gươm & Mỹ Đình", "HO GUOM & MY DINH"),
            ("New Year Live 2031", "NEW YEAR LIVE 2031"),
            ("Ánh\tSáng", "ANH SANG"),
        ];
        for (text, want) in cases {
            assert_eq!(fold(text), want, "{text}");
        }
    }

    #[test]
    fn the_strip_has_ink_only_for_text() {
        assert!(strip("", 232).iter().all(|&b| b == 0xff));
        assert!(strip("   ", 232).iter().all(|&b| b == 0xff));
        let inked = strip("HOLDFAST", 232);
        assert_eq!(inked.len(), 29 * STRIP_PX);
        assert!(inked.iter().any(|&b| b != 0xff));
        // The margins stay white.
        assert!(inked[..29 * 8].iter().all(|&b| b == 0xff));
        // A long name is cut, never drawn past the edge.
        let long = strip(&"W".repeat(200), 232);
        assert_eq!(long.len(), 29 * STRIP_PX);
    }
}
