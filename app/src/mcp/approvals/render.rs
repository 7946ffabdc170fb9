//! Tool-call arguments rendered for the person who approves them: every key and value shown,
//! bounded (a huge or deeply nested request cannot flood the screen or the daemon), long
//! strings folded with the count of what is hidden, and nothing interpreted: the text is
//! JSON-escaped here, and HTML-escaped by the console ([`html_escape`]).

use serde_json::Value;

/// Longest rendering, in bytes.
pub const MAX_RENDERED: usize = 4096;
/// Longest string value shown before it is folded.
pub const MAX_STRING: usize = 240;
/// Deepest nesting shown.
pub const MAX_DEPTH: usize = 6;
/// Most entries shown of one object or array.
pub const MAX_ENTRIES: usize = 32;

/// Longest full rendering kept (for `approvals show`): anything larger cannot be approved
/// from its full text and says so.
pub const MAX_FULL: usize = 256 * 1024;

/// The whole of `args`, pretty JSON with invisible characters escaped, up to [`MAX_FULL`]
/// bytes; and whether it is complete.
pub fn render_full(args: &Value) -> (String, bool) {
    let text = visible(&serde_json::to_string_pretty(args).unwrap_or_default());
    if text.len() <= MAX_FULL {
        return (text, true);
    }
    let mut cut = MAX_FULL;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (
        format!("{}\n... (too large to show in full)", &text[..cut]),
        false,
    )
}

/// Whether [`render_args`] shows `args` completely (nothing folded, hidden or cut).
pub fn shown_in_full(args: &Value) -> bool {
    fn fits(v: &Value, depth: usize) -> bool {
        match v {
            Value::String(s) => s.chars().count() <= MAX_STRING,
            Value::Object(m) => {
                depth < MAX_DEPTH
                    && m.len() <= MAX_ENTRIES
                    && m.iter()
                        .all(|(k, v)| k.chars().count() <= MAX_STRING && fits(v, depth + 1))
            }
            Value::Array(a) => {
                depth < MAX_DEPTH && a.len() <= MAX_ENTRIES && a.iter().all(|v| fits(v, depth + 1))
            }
            _ => true,
        }
    }
    fits(args, 0) && render_args_unbounded_len(args) <= MAX_RENDERED
}

fn render_args_unbounded_len(args: &Value) -> usize {
    let mut out = String::new();
    render(args, 0, &mut out);
    out.len()
}

/// `args` as indented `key: value` lines, within the bounds above.
pub fn render_args(args: &Value) -> String {
    let mut out = String::new();
    render(args, 0, &mut out);
    if out.len() > MAX_RENDERED {
        let mut cut = MAX_RENDERED;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let hidden = out.len() - cut;
        out.truncate(cut);
        out.push_str(&format!("\n... ({hidden} more bytes not shown)"));
    }
    out
}

fn render(value: &Value, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match value {
        Value::Object(map) if depth >= MAX_DEPTH => out.push_str(&format!(
            "{indent}{{... {} keys nested too deep}}\n",
            map.len()
        )),
        Value::Array(items) if depth >= MAX_DEPTH => out.push_str(&format!(
            "{indent}[... {} items nested too deep]\n",
            items.len()
        )),
        Value::Object(map) => {
            for (key, v) in map.iter().take(MAX_ENTRIES) {
                let key = quoted(key);
                if is_scalar(v) {
                    out.push_str(&format!("{indent}{key}: {}\n", scalar(v)));
                } else {
                    out.push_str(&format!("{indent}{key}:\n"));
                    render(v, depth + 1, out);
                }
            }
            if map.len() > MAX_ENTRIES {
                out.push_str(&format!(
                    "{indent}... {} more keys\n",
                    map.len() - MAX_ENTRIES
                ));
            }
        }
        Value::Array(items) => {
            for v in items.iter().take(MAX_ENTRIES) {
                if is_scalar(v) {
                    out.push_str(&format!("{indent}- {}\n", scalar(v)));
                } else {
                    out.push_str(&format!("{indent}-\n"));
                    render(v, depth + 1, out);
                }
            }
            if items.len() > MAX_ENTRIES {
                out.push_str(&format!(
                    "{indent}... {} more items\n",
                    items.len() - MAX_ENTRIES
                ));
            }
        }
        other => out.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        other => other.to_string(),
    }
}

/// A string as JSON text (quotes, escapes: control characters and newlines are visible), cut
/// at [`MAX_STRING`] characters with the count of what is hidden.
fn quoted(s: &str) -> String {
    let chars = s.chars().count();
    if chars <= MAX_STRING {
        return visible(&Value::String(s.to_owned()).to_string());
    }
    let head: String = s.chars().take(MAX_STRING).collect();
    format!(
        "{}... ({} more characters)",
        visible(&Value::String(head).to_string()),
        chars - MAX_STRING
    )
}

/// Whether `c` changes how the text around it is shown without being seen itself, or is
/// invisible: bidirectional marks, overrides and isolates, zero-width and format characters,
/// soft hyphens, fillers, variation selectors, tag characters, and control characters.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e0fff}'
    ) || c.is_control()
}

/// `text` with every [`invisible`] character written as a `\u{..}` escape, so
/// `/srv/docs/\u{202e}txt.exe` cannot pose as another path and a name cannot hide part of
/// itself.
pub fn visible(text: &str) -> String {
    text.chars()
        .map(|c| {
            if invisible(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Text safe to put in HTML element content or a quoted attribute.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_every_key_and_value() {
        let text = render_args(&json!({"path": "/srv/docs/a.txt", "content": "hi", "n": 3}));
        assert_eq!(
            text,
            "\"content\": \"hi\"\n\"n\": 3\n\"path\": \"/srv/docs/a.txt\"\n"
        );
    }

    #[test]
    fn markup_and_control_characters_stay_text() {
        let text = render_args(&json!({"<b>k</b>": "<script>alert(1)</script>\n\u{7}"}));
        // JSON escaping makes the newline and the bell visible...
        assert!(text.contains("\\n\\u0007"), "{text}");
        // ... and HTML escaping makes the markup inert.
        let html = html_escape(&text);
        assert!(!html.contains('<') && !html.contains('>'), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert_eq!(html_escape("\"'&"), "&quot;&#39;&amp;");
    }

    #[test]
    fn invisible_and_reordering_characters_are_shown_as_escapes() {
        let text = render_args(&json!({"path": "/srv/docs/\u{202e}txt.exe", "\u{200b}key": 1}));
        assert!(text.contains("/srv/docs/\\u{202e}txt.exe"), "{text}");
        assert!(text.contains("\"\\u{200b}key\""), "{text}");
        // Soft hyphens, tags, fillers and C1 controls too.
        let text = render_args(&json!({ "p": "a\u{ad}b\u{e0041}c\u{3164}d\u{9b}e" }));
        assert_eq!(text, "\"p\": \"a\\u{ad}b\\u{e0041}c\\u{3164}d\\u{9b}e\"\n");
        assert!(!text.contains('\u{202e}') && !text.contains('\u{200b}'));
    }

    #[test]
    fn long_values_are_folded_with_a_count() {
        let long = "x".repeat(10_000);
        let text = render_args(&json!({ "content": long }));
        assert!(text.contains(&format!("... ({} more characters)", 10_000 - MAX_STRING)));
        assert!(text.len() < 400, "{}", text.len());
    }

    #[test]
    fn huge_and_deep_requests_stay_bounded() {
        let wide: serde_json::Map<String, Value> = (0..10_000)
            .map(|i| (format!("k{i:05}"), json!(i)))
            .collect();
        let text = render_args(&Value::Object(wide));
        assert!(text.contains("... 9968 more keys"), "{text}");
        let mut deep = json!("bottom");
        // (Requests are parsed with serde_json's nesting limit of 128; 1,000 is beyond it.)
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        let text = render_args(&deep);
        assert!(text.contains("nested too deep") && text.len() <= MAX_RENDERED + 64);
        let many_long: Vec<Value> = (0..32).map(|_| json!("y".repeat(1_000))).collect();
        let text = render_args(&json!({ "a": many_long }));
        assert!(text.len() <= MAX_RENDERED + 64 && text.ends_with("more bytes not shown)"));
    }
}
