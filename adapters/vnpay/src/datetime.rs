//! VNPAY's timestamps: `yyyyMMddHHmmss` in Vietnam time (GMT+7), whatever the caller's offset.

use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// GMT+7, the offset of every VNPAY timestamp.
pub const VIETNAM: UtcOffset = offset!(+7);

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day][hour][minute][second]");

/// Formats `at` as VNPAY expects (`20240521091806`), converted to GMT+7.
pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(VIETNAM)
        .format(FORMAT)
        .expect("a four-digit year always formats")
}

/// Parses a VNPAY timestamp (GMT+7). `None` if it is not exactly `yyyyMMddHHmmss`.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    PrimitiveDateTime::parse(text, FORMAT)
        .ok()
        .map(|at| at.assume_offset(VIETNAM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_in_vietnam_time() {
        assert_eq!(format(datetime!(2024-05-21 02:18:06 UTC)), "20240521091806");
        assert_eq!(format(datetime!(2024-12-31 20:00:00 UTC)), "20250101030000");
    }

    #[test]
    fn parses_what_it_formats() {
        let at = datetime!(2024-05-21 02:18:06 UTC);
        assert_eq!(parse(&format(at)), Some(at));
        for bad in [
            "",
            "2024052109180",
            "202405210918061",
            "20241321091806",
            "2024-05-21T0918",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
