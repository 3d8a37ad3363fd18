//! How one setting is read from its text and written back, the same in every layer (file,
//! environment, flags): durations, numbers and flags within bounds, optional paths, URLs, lists.
//! The settings structs of each subsystem name these in their serde attributes. A refused value
//! is reported with what is accepted; `config.rs` puts the setting's name in front. Knows no
//! subsystem.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// How every refusal starts: `= 'VALUE' is not accepted: expected ACCEPTED`. `config.rs` tells a
/// refused value from other errors by it, and names the setting before it.
pub const REFUSAL_START: &str = "= '";

/// The text of a refusal: the value given and what is accepted instead.
pub fn refusal(value: &str, accepted: &str) -> String {
    format!("{REFUSAL_START}{value}' is not accepted: expected {accepted}")
}

fn refused<E: de::Error>(value: &str, accepted: &str) -> E {
    E::custom(refusal(value, accepted))
}

/// The value as text, however the layer typed it: the environment and flags give text, a file
/// may give numbers or booleans.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, number or boolean")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text)
}

/// The value read by `parse`, refused with `accepted` where that gives None.
pub fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    accepted: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, D::Error> {
    let text = text(d)?;
    parse(&text).ok_or_else(|| refused(&text, accepted))
}

/// A duration (`parse_duration`) within `range`.
pub fn duration<'de, D: Deserializer<'de>>(
    d: D,
    range: RangeInclusive<Duration>,
    accepted: &str,
) -> Result<Duration, D::Error> {
    parsed(d, accepted, |t| {
        parse_duration(t).filter(|v| range.contains(v))
    })
}

/// A whole number within `range`.
pub fn number<'de, D: Deserializer<'de>>(
    d: D,
    range: RangeInclusive<usize>,
    accepted: &str,
) -> Result<usize, D::Error> {
    parsed(d, accepted, |t| {
        t.trim().parse().ok().filter(|n| range.contains(n))
    })
}

/// `true` or `false`; blank is false, so a chart can template an empty variable.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    parsed(d, "true or false", |t| match t.trim() {
        "true" => Some(true),
        "false" | "" => Some(false),
        _ => None,
    })
}

/// A file path; blank is none.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = text(d)?;
    Ok(Some(text.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// An http(s) URL with a host, without its trailing slash.
pub fn http_url(text: &str) -> Option<String> {
    let text = text.trim();
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(text.trim_end_matches('/').to_string())
        }
        _ => None,
    }
}

/// The items of a comma-separated list, trimmed, blanks dropped.
pub fn comma_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Parses `500ms`, `2s`, `1.5s`, `10m`, `1h`, `7d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let secs = n * scale;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Writes a duration as the settings file spells it (`2s`, `750ms`).
pub fn duration_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Writes a list as one comma-separated string: how the file and the environment spell lists.
pub fn comma_list<'a, S: Serializer>(
    items: impl IntoIterator<Item = &'a String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let items: Vec<&str> = items.into_iter().map(String::as_str).collect();
    s.serialize_str(&items.join(","))
}

/// Writes a URL without the secret in its credentials (`crate::text::redact_url`).
pub fn redacted_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&crate::text::redact_url(u)),
        None => s.serialize_none(),
    }
}

/// As `comma_list`, each URL redacted.
pub fn redacted_url_list<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    let urls: Vec<String> = urls.iter().map(|u| crate::text::redact_url(u)).collect();
    comma_list(&urls, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 3 "), Some(Duration::from_secs(3)));
        for bad in ["", "s", "-1s", "1w", "fast", "NaNs", "1e99d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
