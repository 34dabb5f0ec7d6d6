use super::*;

#[test]
fn money_is_written_for_the_language() {
    let cases: &[(i64, &str, Language, &str)] = &[
        (1_000_000, "VND", Language::Vi, "1.000.000 ₫"),
        (1_000_000, "VND", Language::En, "1,000,000 VND"),
        (0, "VND", Language::Vi, "0 ₫"),
        (999, "VND", Language::Vi, "999 ₫"),
        (1_000, "VND", Language::En, "1,000 VND"),
        (12_345_678, "VND", Language::Vi, "12.345.678 ₫"),
        (100_000, "VND", Language::Vi, "100.000 ₫"),
        (-50_000, "VND", Language::Vi, "-50.000 ₫"),
        (1_250, "USD", Language::En, "12.50 USD"),
        (123_456_705, "USD", Language::Vi, "1.234.567,05 USD"),
        (
            i64::MIN,
            "VND",
            Language::En,
            "-9,223,372,036,854,775,808 VND",
        ),
    ];
    for (minor, currency, lang, want) in cases {
        assert_eq!(
            money(*minor, currency, *lang),
            *want,
            "{minor} {currency} {lang:?}"
        );
    }
}

#[test]
fn times_are_local_to_the_event() {
    // 2026-12-24T12:30:00Z
    let at = 1_798_115_400_000;
    let cases: &[(&str, Language, &str)] = &[
        (
            "Asia/Ho_Chi_Minh",
            Language::Vi,
            "19:30 Thứ Năm, 24/12/2026 (GMT+07:00)",
        ),
        (
            "Asia/Ho_Chi_Minh",
            Language::En,
            "Thursday 24 December 2026, 19:30 (GMT+07:00)",
        ),
        (
            "Europe/Paris",
            Language::En,
            "Thursday 24 December 2026, 13:30 (GMT+01:00)",
        ),
        ("UTC", Language::Vi, "12:30 Thứ Năm, 24/12/2026 (GMT)"),
        (
            "America/New_York",
            Language::En,
            "Thursday 24 December 2026, 07:30 (GMT-05:00)",
        ),
        // Unknown zones fall back to Vietnam's.
        (
            "Mars/Olympus",
            Language::Vi,
            "19:30 Thứ Năm, 24/12/2026 (GMT+07:00)",
        ),
    ];
    for (zone, lang, want) in cases {
        assert_eq!(local_time(at, zone, *lang), *want, "{zone} {lang:?}");
    }
    // Summer time: 2026-07-01T12:00:00Z in Paris is 14:00, a Wednesday.
    assert_eq!(
        local_time(1_782_907_200_000, "Europe/Paris", Language::En),
        "Wednesday 1 July 2026, 14:00 (GMT+02:00)"
    );
}

#[test]
fn zones_and_languages_are_checked() {
    assert!(time_zone_known("Asia/Ho_Chi_Minh"));
    assert!(time_zone_known("Europe/London"));
    assert!(!time_zone_known("Asia/Atlantis"));
    assert!(!time_zone_known(""));
    assert_eq!(Language::parse("vi"), Some(Language::Vi));
    assert_eq!(Language::parse("en"), Some(Language::En));
    assert_eq!(Language::parse("fr"), None);
}

fn about(language: Language) -> OrderAbout {
    OrderAbout {
        event_name: "Đêm nhạc Trịnh".to_owned(),
        venue: "Nhà hát Lớn Hà Nội".to_owned(),
        starts_at_ms: 1_798_115_400_000,
        time_zone: "Asia/Ho_Chi_Minh".to_owned(),
        language,
        ticket_types: vec![("VIP".to_owned(), "Hạng VIP".to_owned())],
    }
}

fn facts() -> Facts {
    Facts {
        order_id: "0193-order".to_owned(),
        amount: 2_000_000,
        currency: "VND".to_owned(),
        lines: vec![Line {
            ticket_type: "VIP".to_owned(),
            quantity: 2,
            price: 1_000_000,
        }],
        payment_url: "https://pay.example/x".to_owned(),
        expires_at_ms: Some(1_798_000_000_000),
        reason: "the hold expired".to_owned(),
        tickets: 2,
        link: "https://holdfast.example/v1/payments/vnpay/return".to_owned(),
        ..Facts::default()
    }
}

#[test]
fn every_message_names_the_event_venue_and_local_time() {
    let kinds = [
        Kind::PaymentLink,
        Kind::TicketsIssued,
        Kind::OrderCancelled,
        Kind::OrderRefunded,
        Kind::RefundAutomatic,
        Kind::Reminder,
    ];
    for lang in [Language::Vi, Language::En] {
        for kind in kinds {
            let m = render(kind, &about(lang), &facts()).unwrap();
            assert!(
                m.subject.contains("Đêm nhạc Trịnh"),
                "{kind:?} {lang:?}: {}",
                m.subject
            );
            assert!(!m.subject.is_empty() && !m.subject.contains('\n'));
            for text in [&m.body, &m.sms] {
                assert!(text.contains("Đêm nhạc Trịnh"), "{kind:?} {lang:?}: {text}");
                assert!(text.contains("19:30"), "{kind:?} {lang:?}: {text}");
            }
            assert!(
                m.body.contains("Nhà hát Lớn Hà Nội"),
                "{kind:?} {lang:?}: {}",
                m.body
            );
            assert!(!m.body.contains("{{") && !m.body.contains("{%"));
            assert!(
                !m.body.contains("\n\n\n"),
                "{kind:?} {lang:?}: {:?}",
                m.body
            );
            if kind == Kind::PaymentLink {
                assert!(m.body.contains("https://pay.example/x"));
                assert!(m.sms.contains("https://pay.example/x"));
            } else {
                assert!(
                    m.body
                        .contains("https://holdfast.example/v1/payments/vnpay/return")
                );
            }
        }
    }
}

#[test]
fn the_payment_link_lists_ticket_types_and_amounts_in_the_language() {
    let vi = render(Kind::PaymentLink, &about(Language::Vi), &facts()).unwrap();
    assert!(
        vi.body
            .contains("2 × Hạng VIP: 1.000.000 ₫ mỗi vé, 2.000.000 ₫"),
        "{}",
        vi.body
    );
    assert!(vi.body.contains("Tổng cộng: 2.000.000 ₫"), "{}", vi.body);
    assert!(
        vi.body
            .contains("Thời gian: 19:30 Thứ Năm, 24/12/2026 (GMT+07:00)"),
        "{}",
        vi.body
    );
    let en = render(Kind::PaymentLink, &about(Language::En), &facts()).unwrap();
    assert!(
        en.body
            .contains("2 × Hạng VIP: 1,000,000 VND each, 2,000,000 VND"),
        "{}",
        en.body
    );
    assert!(
        en.body
            .contains("Starts: Thursday 24 December 2026, 19:30 (GMT+07:00)"),
        "{}",
        en.body
    );
    assert_eq!(en.subject, "Complete your payment for Đêm nhạc Trịnh");
}

#[test]
fn an_order_without_its_event_still_renders() {
    // Records written before orders carried their event: no name, no start.
    let m = render(Kind::OrderCancelled, &OrderAbout::default(), &facts()).unwrap();
    assert!(m.body.contains("the hold expired"));
    assert!(!m.body.contains("Thời gian"));
}

#[test]
fn the_sales_summary_lists_each_event_in_its_own_time_zone() {
    let facts = Facts {
        day: "2026-12-01".to_owned(),
        summary: vec![
            SummaryLine {
                event_name: "Đêm nhạc Trịnh".to_owned(),
                starts_at_ms: 1_798_115_400_000,
                time_zone: "Asia/Ho_Chi_Minh".to_owned(),
                sold_day: 3,
                sold_total: 40,
                revenue: vec![("VND".to_owned(), 3_000_000)],
            },
            SummaryLine {
                event_name: "Paris".to_owned(),
                starts_at_ms: 1_798_115_400_000,
                time_zone: "Europe/Paris".to_owned(),
                sold_day: 0,
                sold_total: 2,
                revenue: vec![],
            },
        ],
        ..Facts::default()
    };
    let about = OrderAbout {
        language: Language::En,
        ..OrderAbout::default()
    };
    let en = render(Kind::SalesSummary, &about, &facts).unwrap();
    assert_eq!(en.subject, "Sales on 2026-12-01");
    assert!(
        en.body.contains(
            "Đêm nhạc Trịnh, Thursday 24 December 2026, 19:30 (GMT+07:00): 3 ticket(s) sold \
             that day, 40 in all; orders that day 3,000,000 VND"
        ),
        "{}",
        en.body
    );
    assert!(
        en.body.contains(
            "Paris, Thursday 24 December 2026, 13:30 (GMT+01:00): 0 ticket(s) sold that day, \
             2 in all\n"
        ),
        "{}",
        en.body
    );
    let vi = render(Kind::SalesSummary, &OrderAbout::default(), &facts).unwrap();
    assert!(
        vi.body
            .contains("bán 3 vé trong ngày, tổng cộng 40 vé; đơn hàng trong ngày 3.000.000 ₫"),
        "{}",
        vi.body
    );
}
