//! Text from tenants or the network, made safe to put in RPC errors, logs and the debug page:
//! bounded in length, control characters escaped.

/// Longest RPC error message sent to KEDA (it lands in Kubernetes events).
pub const MAX_MESSAGE: usize = 2048;

/// `text` with control characters escaped (`\n`, `\u{1b}`) and cut to about `max` bytes on a
/// character boundary, saying how much was left out.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (i, c) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("... ({} more bytes)", text.len() - i));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_and_control_characters_escaped() {
        assert_eq!(bounded("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        let long = "é".repeat(1000);
        let cut = bounded(&long, 10);
        assert!(cut.starts_with("ééééé..."), "{cut}");
        assert!(cut.ends_with("(1990 more bytes)"), "{cut}");
        assert_eq!(bounded("short", 10), "short");
    }
}
