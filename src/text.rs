//! Text from tenants or the network, made safe to put in RPC errors, logs and the debug page:
//! bounded in length, control and invisible formatting characters escaped.

/// Longest RPC error message sent to KEDA (it lands in Kubernetes events).
pub const MAX_MESSAGE: usize = 2048;

/// `text` with control characters (`\n`, `\u{1b}`) and invisible formatting characters
/// (bidirectional overrides such as `\u{202e}`, zero-width spaces) escaped, at most `max` bytes
/// long: a cut text ends with `... (N more bytes)` inside the bound. A `max` too small for that
/// suffix gets the text cut without it.
pub fn bounded(text: &str, max: usize) -> String {
    // Room for the suffix, sized for the largest count it can carry.
    let suffix_room = "... ( more bytes)".len() + digits(text.len());
    let body_max = max.saturating_sub(suffix_room);
    let mut out = String::with_capacity(text.len().min(max));
    // Where to cut when the whole text does not fit: the output length and text position of
    // the first character that would take the output past `body_max`.
    let mut cut = None;
    for (i, c) in text.char_indices() {
        let before = out.len();
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if cut.is_none() && out.len() > body_max {
            cut = Some((before, i));
        }
        if out.len() > max {
            let (keep, at) = cut.expect("body_max <= max, so the cut is known");
            if max >= suffix_room {
                out.truncate(keep);
                out.push_str(&format!("... ({} more bytes)", text.len() - at));
            } else {
                out.truncate(before);
            }
            return out;
        }
    }
    out
}

/// `text` with the secret in any credentials it holds replaced by `REDACTED`: a URL's password
/// (its user name kept, so the text still says who), or its user name when there is no password
/// (a token, then); in text that does not parse as a URL with a host (`user:pass@host`), all
/// before the last `@`. The one rule for URLs shown in errors, logs and `check-config`.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.has_host() => {
            let changed = if url.password().is_some() {
                url.set_password(Some("REDACTED")).is_ok()
            } else if !url.username().is_empty() {
                url.set_username("REDACTED").is_ok()
            } else {
                false
            };
            match changed {
                // The parser adds a `/` to an empty path; the text shown keeps the original's.
                true if !text.ends_with('/') => url.as_str().trim_end_matches('/').to_string(),
                true => url.to_string(),
                false => text.to_string(),
            }
        }
        _ => match (text.find("//"), text.rfind('@')) {
            (Some(start), Some(at)) if start < at => {
                format!("{}//REDACTED@{}", &text[..start], &text[at + 1..])
            }
            (None, Some(at)) => format!("REDACTED@{}", &text[at + 1..]),
            _ => text.to_string(),
        },
    }
}

/// Characters that could hide or reorder text in a terminal, a log viewer or `kubectl describe`:
/// controls, and the invisible formatting characters of Unicode (bidirectional embeddings,
/// overrides, isolates and marks; zero-width spaces and joiners; line and paragraph separators;
/// the byte order mark; interlinear annotations; tag characters).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_and_control_characters_escaped() {
        assert_eq!(bounded("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        let long = "é".repeat(1000);
        let cut = bounded(&long, 40);
        assert!(cut.starts_with("éééé"), "{cut}");
        assert!(cut.ends_with("... (1982 more bytes)"), "{cut}");
        assert!(cut.len() <= 40, "{} bytes: {cut}", cut.len());
        assert_eq!(bounded("short", 10), "short");
        // Too small for the suffix: cut without it, still within the bound.
        assert_eq!(bounded(&long, 9), "éééé");
    }

    #[test]
    fn the_bound_includes_the_suffix_and_escapes() {
        let texts = [
            "x".repeat(5000),
            "é".repeat(3000),
            "\n".repeat(3000),
            format!("{}{}", "a".repeat(2040), "\u{202e}".repeat(10)),
        ];
        for text in &texts {
            for max in [0, 1, 20, 21, 22, 23, 30, 100, 300, 2047, MAX_MESSAGE] {
                let out = bounded(text, max);
                assert!(out.len() <= max, "max {max}: {} bytes", out.len());
            }
        }
        // The message of an error whose text is exactly at the bound is not cut.
        let exact = "y".repeat(MAX_MESSAGE);
        assert_eq!(bounded(&exact, MAX_MESSAGE), exact);
        let over = "y".repeat(MAX_MESSAGE + 1);
        let out = bounded(&over, MAX_MESSAGE);
        assert!(
            out.ends_with(" more bytes)") && out.len() <= MAX_MESSAGE,
            "{out}"
        );
    }

    #[test]
    fn credentials_in_urls_are_redacted_by_one_rule() {
        let cases = [
            (
                "https://scaler:s3cret@prom.example:9090",
                "https://scaler:REDACTED@prom.example:9090",
            ),
            (
                "http://admin:hunter2@10.0.0.7:8000/metrics",
                "http://admin:REDACTED@10.0.0.7:8000/metrics",
            ),
            ("http://token@prom/", "http://REDACTED@prom/"),
            ("ftp://u:hunter2@proxy", "ftp://u:REDACTED@proxy"),
            ("u:hunter2@proxy:3128", "REDACTED@proxy:3128"),
            ("http//u:p@x", "http//REDACTED@x"),
            ("http://prom:9090", "http://prom:9090"),
            ("not a url", "not a url"),
        ];
        for (text, shown) in cases {
            assert_eq!(redact_url(text), shown, "{text}");
        }
    }

    #[test]
    fn invisible_formatting_characters_are_escaped() {
        // A right-to-left override would make `cod.exe` read as something else.
        assert_eq!(bounded("a\u{202e}b", 100), "a\\u{202e}b");
        for c in [
            '\u{200B}',
            '\u{200E}',
            '\u{200F}',
            '\u{2028}',
            '\u{202A}',
            '\u{202D}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{061C}',
        ] {
            let out = bounded(&format!("x{c}y"), 100);
            assert!(!out.contains(c), "{c:?}: {out}");
            assert!(out.contains("\\u{"), "{c:?}: {out}");
        }
        // Visible non-ASCII text is kept as it is.
        assert_eq!(bounded("naïve 東京 ✓", 100), "naïve 東京 ✓");
    }
}
