//! Command-line values that need more than clap's defaults: durations, quantity ranges, URLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `500ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 24.0 * 3600.0 {
        return Err(format!("{text:?} must be more than 0 and at most 24 hours"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Seats per hold: a fixed number (`2`) or an inclusive range drawn uniformly (`1-4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantityRange {
    pub min: u32,
    pub max: u32,
}

impl QuantityRange {
    pub const fn fixed(n: u32) -> Self {
        Self { min: n, max: n }
    }

    pub fn pick(&self, rng: &mut impl rand::Rng) -> u32 {
        if self.min == self.max {
            self.min
        } else {
            rng.gen_range(self.min..=self.max)
        }
    }
}

impl FromStr for QuantityRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a quantity like 2 or 1-4"))
        };
        let range = match s.split_once('-') {
            Some((a, b)) => Self {
                min: parse(a)?,
                max: parse(b)?,
            },
            None => Self::fixed(parse(s)?),
        };
        if range.min == 0 || range.min > range.max || range.max > 10_000 {
            return Err(format!(
                "{s:?}: quantities run from 1 to 10000, smallest first"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for QuantityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// A fraction in `[0, 1]`.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text:?} must be between 0 and 1"))
    }
}

/// `http://host:port` (a trailing `/` allowed) → `host:port`. Only plain HTTP: the harness
/// talks to loopback servers.
pub fn parse_http_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url:?}: only http:// URLs are supported"))?;
    let authority = rest.trim_end_matches('/');
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('/'),
        "{url:?}: give the server's base URL, like http://127.0.0.1:8080"
    );
    Ok(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "-1s", "5h", "abc", "25m0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantity_ranges_parse_and_pick_within_bounds() {
        assert_eq!("2".parse(), Ok(QuantityRange::fixed(2)));
        assert_eq!("1-4".parse(), Ok(QuantityRange { min: 1, max: 4 }));
        for bad in ["0", "4-1", "x", "1-", "10001"] {
            assert!(bad.parse::<QuantityRange>().is_err(), "{bad}");
        }
        let range = QuantityRange { min: 1, max: 4 };
        let mut rng = rand::thread_rng();
        assert!(
            (0..1000)
                .map(|_| range.pick(&mut rng))
                .all(|q| (1..=4).contains(&q))
        );
        assert_eq!(range.to_string(), "1-4");
        assert_eq!(QuantityRange::fixed(3).to_string(), "3");
    }

    #[test]
    fn ratios_are_fractions() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
    }

    #[test]
    fn urls_become_authorities() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/").ok().as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            parse_http_url("http://localhost").ok().as_deref(),
            Some("localhost:80")
        );
        assert!(parse_http_url("https://127.0.0.1:8080").is_err());
        assert!(parse_http_url("http://127.0.0.1:8080/v1").is_err());
    }
}
