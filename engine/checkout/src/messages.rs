//! What the buyer reads: the notifications service's e-mails and SMS rendered from the
//! template files under `templates/{vi,en}/` (embedded in the binary), with amounts and times
//! written for the buyer's language and the event's time zone. Everything here is pure.

use std::sync::OnceLock;

use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};

/// The time zone of events that name none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Ho_Chi_Minh";

/// A language messages are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Vi,
    En,
}

impl Language {
    /// `vi` or `en`; anything else is `None`.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "vi" => Some(Self::Vi),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vi => "vi",
            Self::En => "en",
        }
    }
}

/// True for an IANA time zone name the bundled zone database knows.
pub fn time_zone_known(name: &str) -> bool {
    jiff::tz::TimeZone::get(name).is_ok()
}

/// Groups the digits of `n` by three with `sep`.
fn grouped(n: u64, sep: char) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// An amount in its currency's minor unit, as the buyer's language writes it: the đồng
/// (no minor unit) as `1.000.000 ₫` in Vietnamese and `1,000,000 VND` in English; other
/// currencies with two decimals and their code (`12,50 USD`, `12.50 USD`).
pub fn money(minor: i64, currency: &str, language: Language) -> String {
    let (thousands, decimal) = match language {
        Language::Vi => ('.', ','),
        Language::En => (',', '.'),
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    match (currency, language) {
        ("VND", Language::Vi) => format!("{sign}{} ₫", grouped(abs, thousands)),
        ("VND", Language::En) => format!("{sign}{} VND", grouped(abs, thousands)),
        _ => format!(
            "{sign}{}{decimal}{:02} {currency}",
            grouped(abs / 100, thousands),
            abs % 100
        ),
    }
}

const WEEKDAYS_VI: [&str; 7] = [
    "Thứ Hai",
    "Thứ Ba",
    "Thứ Tư",
    "Thứ Năm",
    "Thứ Sáu",
    "Thứ Bảy",
    "Chủ Nhật",
];

/// `at_ms` (Unix milliseconds) in `time_zone` as the buyer's language writes it, with the UTC
/// offset: `19:30 Thứ Bảy, 20/12/2026 (GMT+07:00)` or `Saturday 20 December 2026, 19:30
/// (GMT+07:00)`. An unknown zone falls back to [`DEFAULT_TIME_ZONE`].
pub fn local_time(at_ms: i64, time_zone: &str, language: Language) -> String {
    let tz = jiff::tz::TimeZone::get(time_zone)
        .or_else(|_| jiff::tz::TimeZone::get(DEFAULT_TIME_ZONE))
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(at) = jiff::Timestamp::from_millisecond(at_ms) else {
        return String::new();
    };
    let zoned = at.to_zoned(tz);
    let offset = zoned.strftime("%:z").to_string();
    let offset = if offset == "+00:00" {
        "GMT".to_owned()
    } else {
        format!("GMT{offset}")
    };
    match language {
        Language::Vi => {
            let weekday =
                WEEKDAYS_VI[usize::from(zoned.weekday().to_monday_zero_offset().unsigned_abs())];
            format!(
                "{} {weekday}, {} ({offset})",
                zoned.strftime("%H:%M"),
                zoned.strftime("%d/%m/%Y")
            )
        }
        Language::En => format!("{} ({offset})", zoned.strftime("%A %-d %B %Y, %H:%M")),
    }
}

/// What messages say about an order: its event and the names of its ticket types. The orders
/// service puts it on `OrderCreated`; the notifications service keeps it for the order's later
/// messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAbout {
    pub event_name: String,
    pub venue: String,
    pub starts_at_ms: i64,
    /// IANA name; empty in records written before events had zones.
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub language: Language,
    /// Ticket type code → display name.
    #[serde(default)]
    pub ticket_types: Vec<(String, String)>,
}

/// One ticket type of an order, as the message lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub ticket_type: String,
    pub quantity: u32,
    /// The unit price in minor units.
    pub price: i64,
}

/// Which message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PaymentLink,
    TicketsIssued,
    OrderCancelled,
    /// Refunded on request (buyer, organizer, admin).
    OrderRefunded,
    /// Refunded by the system: paid after the hold expired, or sold out meanwhile.
    RefundAutomatic,
    /// The scheduler's reminder to a ticket holder before the event starts.
    Reminder,
    /// The scheduler's daily sales summary to an organizer.
    SalesSummary,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Self::PaymentLink => "payment_link",
            Self::TicketsIssued => "tickets_issued",
            Self::OrderCancelled => "order_cancelled",
            Self::OrderRefunded => "order_refunded",
            Self::RefundAutomatic => "refund_automatic",
            Self::Reminder => "reminder",
            Self::SalesSummary => "sales_summary",
        }
    }
}

/// What a message is about beyond the order: the values its template may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub order_id: String,
    /// Amount (minor units) and currency: to pay, or paid back.
    pub amount: i64,
    pub currency: String,
    pub lines: Vec<Line>,
    pub payment_url: String,
    /// When the payment window closes (Unix ms).
    pub expires_at_ms: Option<i64>,
    pub reason: String,
    pub tickets: usize,
    /// A page a browser shows without signing in (the return page).
    pub link: String,
    /// The sales summary's day (`2026-12-01`) and its events.
    pub day: String,
    pub summary: Vec<SummaryLine>,
}

/// One live event in an organizer's sales summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryLine {
    pub event_name: String,
    pub starts_at_ms: i64,
    pub time_zone: String,
    pub sold_day: i64,
    pub sold_total: i64,
    /// Amounts (minor units) by currency.
    pub revenue: Vec<(String, i64)>,
}

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    pub sms: String,
}

macro_rules! templates {
    ($($lang:literal / $name:literal),* $(,)?) => {
        &[$((concat!($lang, "/", $name), include_str!(concat!("../templates/", $lang, "/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "vi" / "payment_link.txt",
    "vi" / "payment_link.sms.txt",
    "vi" / "tickets_issued.txt",
    "vi" / "tickets_issued.sms.txt",
    "vi" / "order_cancelled.txt",
    "vi" / "order_cancelled.sms.txt",
    "vi" / "order_refunded.txt",
    "vi" / "order_refunded.sms.txt",
    "vi" / "refund_automatic.txt",
    "vi" / "refund_automatic.sms.txt",
    "vi" / "reminder.txt",
    "vi" / "reminder.sms.txt",
    "vi" / "sales_summary.txt",
    "vi" / "sales_summary.sms.txt",
    "en" / "payment_link.txt",
    "en" / "payment_link.sms.txt",
    "en" / "tickets_issued.txt",
    "en" / "tickets_issued.sms.txt",
    "en" / "order_cancelled.txt",
    "en" / "order_cancelled.sms.txt",
    "en" / "order_refunded.txt",
    "en" / "order_refunded.sms.txt",
    "en" / "refund_automatic.txt",
    "en" / "refund_automatic.sms.txt",
    "en" / "reminder.txt",
    "en" / "reminder.sms.txt",
    "en" / "sales_summary.txt",
    "en" / "sales_summary.sms.txt",
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Plain text: nothing is escaped; a missing value is an error, not a blank.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env
    })
}

/// Renders `kind` for `about`'s language. A `.txt` template's first line is `Subject: …`,
/// then a blank line and the body.
pub fn render(kind: Kind, about: &OrderAbout, facts: &Facts) -> Result<Rendered, minijinja::Error> {
    let lang = about.language;
    let zone = if about.time_zone.is_empty() {
        DEFAULT_TIME_ZONE
    } else {
        &about.time_zone
    };
    let names = |code: &str| {
        about
            .ticket_types
            .iter()
            .find(|(c, _)| c == code)
            .map_or_else(|| code.to_owned(), |(_, n)| n.clone())
    };
    let lines: Vec<_> = facts
        .lines
        .iter()
        .map(|l| {
            context! {
                name => names(&l.ticket_type),
                quantity => l.quantity,
                price => money(l.price, &facts.currency, lang),
                total => money(l.price.saturating_mul(i64::from(l.quantity)), &facts.currency, lang),
            }
        })
        .collect();
    let summary: Vec<_> = facts
        .summary
        .iter()
        .map(|s| {
            let zone = if s.time_zone.is_empty() {
                DEFAULT_TIME_ZONE
            } else {
                &s.time_zone
            };
            let revenue: Vec<String> = s
                .revenue
                .iter()
                .map(|(currency, amount)| money(*amount, currency, lang))
                .collect();
            context! {
                event => s.event_name,
                starts => local_time(s.starts_at_ms, zone, lang),
                sold_day => s.sold_day,
                sold_total => s.sold_total,
                revenue => revenue.join(", "),
            }
        })
        .collect();
    let ctx = context! {
        event => about.event_name,
        venue => about.venue,
        starts => (about.starts_at_ms != 0).then(|| local_time(about.starts_at_ms, zone, lang)),
        time_zone => zone,
        order => facts.order_id,
        amount => money(facts.amount, &facts.currency, lang),
        lines => lines,
        payment_url => facts.payment_url,
        expires => facts.expires_at_ms.map(|ms| local_time(ms, zone, lang)),
        reason => facts.reason,
        tickets => facts.tickets,
        link => facts.link,
        day => facts.day,
        summary => summary,
    };
    let env = environment();
    let base = format!("{}/{}", lang.as_str(), kind.file());
    let text = env.get_template(&format!("{base}.txt"))?.render(&ctx)?;
    let sms = env.get_template(&format!("{base}.sms.txt"))?.render(&ctx)?;
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let subject = first
        .strip_prefix("Subject:")
        .unwrap_or(first)
        .trim()
        .to_owned();
    Ok(Rendered {
        subject,
        body: body.trim_start_matches('\n').to_owned(),
        sms: sms.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

#[cfg(test)]
mod tests;
