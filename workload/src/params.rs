//! Query-parameter parsing with errors that name the parameter and its accepted range.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use crate::error::ApiError;

/// Reads `name` from the query as an integer in `[min, max]`, or `default` when absent.
/// Malformed or below `min` is a 400; above `max` is a 413 (the request asks for too much).
pub fn bounded<T>(
    query: &HashMap<String, String>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let Some(raw) = query.get(name) else {
        return Ok(default);
    };
    let range = format!("accepted range is {min}..={max}");
    let value: T = raw.trim().parse().map_err(|_| ApiError::BadRequest {
        field: name,
        message: format!("{raw:?} is not a whole number; {range}"),
    })?;
    if value < min {
        return Err(ApiError::BadRequest {
            field: name,
            message: format!("{value} is below the minimum; {range}"),
        });
    }
    if value > max {
        return Err(ApiError::TooLarge {
            field: name,
            message: format!("{value} exceeds this server's limit; {range}"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_defaults_and_bounds() {
        assert_eq!(bounded(&q(&[]), "size", 7u32, 1, 10).unwrap(), 7);
        assert_eq!(
            bounded(&q(&[("size", "10")]), "size", 7u32, 1, 10).unwrap(),
            10
        );
        let e = bounded(&q(&[("size", "abc")]), "size", 7u32, 1, 10).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(
            e.to_string().contains("size") && e.to_string().contains("1..=10"),
            "{e}"
        );
        assert_eq!(
            bounded(&q(&[("size", "0")]), "size", 7u32, 1, 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            bounded(&q(&[("size", "-3")]), "size", 7u32, 1, 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            bounded(&q(&[("size", "11")]), "size", 7u32, 1, 10)
                .unwrap_err()
                .status(),
            413
        );
        // Beyond the integer type is still "too malformed to parse", not a panic.
        let huge = "99999999999999999999999";
        assert_eq!(
            bounded(&q(&[("size", huge)]), "size", 7u32, 1, 10)
                .unwrap_err()
                .status(),
            400
        );
    }
}
