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

/// Characters that change how the text around them is shown without being seen themselves
/// (bidirectional overrides and isolates, zero-width characters, the byte-order mark):
/// written as `\u` escapes, so `/srv/docs/\u202etxt.exe` cannot pose as another path.
fn visible(json: &str) -> String {
    json.chars()
        .map(|c| match c {
            '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}' => {
                format!("\\u{:04x}", c as u32)
            }
            other => other.to_string(),
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
        assert!(text.contains("/srv/docs/\\u202etxt.exe"), "{text}");
        assert!(text.contains("\"\\u200bkey\""), "{text}");
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
