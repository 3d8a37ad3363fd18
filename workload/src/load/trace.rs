//! Arrival times from a trace CSV in the Azure LLM inference format
//! (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:17:03.9799600`).

use std::io::BufRead;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading trace: {0}")]
    Io(#[from] std::io::Error),
    #[error("trace line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("trace has no requests")]
    Empty,
}

/// Arrival offsets from the first request, sorted, divided by `speedup` (2.0 replays twice as fast).
pub fn arrivals(reader: impl BufRead, speedup: f64) -> Result<Vec<Duration>, TraceError> {
    let mut stamps = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let line_no = i + 1;
        let first = line.split(',').next().unwrap_or("").trim();
        if first.is_empty() {
            continue;
        }
        if i == 0 && first.eq_ignore_ascii_case("timestamp") {
            continue;
        }
        let secs = parse_timestamp(first).map_err(|message| TraceError::Parse {
            line: line_no,
            message,
        })?;
        stamps.push(secs);
    }
    if stamps.is_empty() {
        return Err(TraceError::Empty);
    }
    // Traces are nearly sorted; sort so replay never goes backwards in time.
    stamps.sort_by(f64::total_cmp);
    let t0 = stamps[0];
    let speedup = if speedup > 0.0 { speedup } else { 1.0 };
    Ok(stamps
        .iter()
        .map(|t| Duration::from_secs_f64((t - t0) / speedup))
        .collect())
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` to seconds since 1970-01-01 (UTC assumed; only differences matter).
pub fn parse_timestamp(s: &str) -> Result<f64, String> {
    let err = || format!("{s:?} is not a timestamp like 2023-11-16 18:17:03.9799600");
    let (date, time) = s.split_once([' ', 'T']).ok_or_else(err)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(mo)), Some(Ok(day)), None) = (d.next(), d.next(), d.next(), d.next())
    else {
        return Err(err());
    };
    let mut t = time.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err(err());
    };
    let h: i64 = h.parse().map_err(|_| err())?;
    let mi: i64 = mi.parse().map_err(|_| err())?;
    let sec: f64 = sec.parse().map_err(|_| err())?;
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0.0..61.0).contains(&sec)
    {
        return Err(err());
    }
    Ok((days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00").unwrap(), 0.0);
        assert_eq!(
            parse_timestamp("2000-03-01 00:00:01.5").unwrap(),
            951_868_801.5
        );
        let a = parse_timestamp("2023-11-16 18:17:03.9799600").unwrap();
        let b = parse_timestamp("2023-11-17 00:00:00").unwrap();
        assert!((b - a - (5.0 * 3600.0 + 42.0 * 60.0 + 56.02004)).abs() < 1e-6);
        assert!(parse_timestamp("2023-13-01 00:00:00").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn arrivals_are_relative_sorted_and_scaled() {
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                   2023-11-16 18:17:04.0000000,1,1\n\
                   2023-11-16 18:17:03.0000000,1,1\n\
                   2023-11-16 18:17:07.0000000,1,1\n";
        let a = arrivals(csv.as_bytes(), 2.0).unwrap();
        assert_eq!(
            a,
            vec![
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(2)
            ]
        );
        let bad = arrivals("TIMESTAMP\nnot-a-time,1,1\n".as_bytes(), 1.0).unwrap_err();
        assert!(bad.to_string().contains("line 2"), "{bad}");
        assert!(matches!(
            arrivals("TIMESTAMP\n".as_bytes(), 1.0),
            Err(TraceError::Empty)
        ));
    }
}
