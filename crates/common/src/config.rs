//! What both daemons' config loaders share: turning a TOML error into one
//! readable line that names the dotted key and the line it is on.

/// A TOML error as (dotted key, one-line message with the line number).
/// The key is the one at the error's position (`spool.bytes_max`, `spool.foo`
/// for an unknown key); `None` when the error has no position.
pub fn toml_error(text: &str, e: &toml::de::Error) -> (Option<String>, String) {
    // toml's message may span lines; keep it on one.
    let msg = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            (key_at(text, start), format!("{msg} (line {line})"))
        }
        None => (None, msg),
    }
}

/// The dotted key at byte `offset` of a TOML text: the table header above it
/// plus the key on its line (`spool.bytes_max`).
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[offset..].find('\n').map(|i| offset + i).unwrap_or(text.len());
    let line = &text[line_start..line_end];
    let trimmed = line.trim();
    let header = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
    if trimmed.starts_with('[') {
        return Some(header(trimmed));
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[[")).then(|| header(l))
    });
    let key = trimmed
        .split('=')
        .next()
        .map(|k| k.trim().trim_matches('"').trim())
        .filter(|k| !k.is_empty() && trimmed.contains('='));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k.to_owned()),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        a: Option<u32>,
        #[serde(default)]
        t: T,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        b: Option<u32>,
    }

    #[test]
    fn unknown_key_names_its_own_line() {
        let text = "a = 1\n\n[t]\nb = 2\nc = 3\n";
        let e = toml::from_str::<Raw>(text).expect_err("unknown key");
        let (key, msg) = toml_error(text, &e);
        assert_eq!(key.as_deref(), Some("t.c"));
        assert!(msg.ends_with("(line 5)"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
