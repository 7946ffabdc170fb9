//! Rules on a tool's arguments, down to the value: where (a JSON pointer into the call's
//! `arguments`, `*` standing for every element of an array or member of an object) and what
//! (a path under a glob, one of a set of strings, a regular expression, a numeric range, a
//! maximum length, or "must be absent"). Every rule whose tool matches applies; a call is
//! forwarded only if all of them hold.
//!
//! Paths are checked as the tool host will use them: absolute only (a relative path means
//! whatever the server takes it from), `.` and `..` resolved, symlinks resolved where the path exists (by
//! the caller's `resolve`, which does the file-system part), and matched segment by segment
//! (`*` within one segment, `**` any number of them). Text that would be decoded or folded by
//! something further on (percent escapes, backslashes, NUL, look-alikes of `/` and `.`) is
//! refused rather than guessed at.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pattern::glob_match;

/// One rule on the arguments of the tools it names. (No field is skipped when serialised:
/// rules travel in tokens as postcard, which is not self-describing.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgRule {
    /// The tool (a name or a `*` glob).
    pub tool: String,
    /// Where in `arguments`: a JSON pointer (`/path`, `/edits/*/path`).
    pub pointer: String,
    /// A path, matched against this glob after normalisation.
    #[serde(default)]
    pub path: Option<String>,
    /// One of these strings.
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
    /// A string matching this regular expression (the whole string).
    #[serde(default)]
    pub regex: Option<String>,
    /// A number at least this.
    #[serde(default)]
    pub min: Option<i64>,
    /// A number at most this.
    #[serde(default)]
    pub max: Option<i64>,
    /// A string (characters) or array (elements) at most this long.
    #[serde(default)]
    pub max_len: Option<u64>,
    /// The argument must not be there at all.
    #[serde(default)]
    pub absent: bool,
}

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgRuleError {
    /// Not `TOOL:POINTER OP VALUE`.
    #[error(
        "{0:?} is not an argument rule: use TOOL:/POINTER=GLOB, TOOL:/POINTER in A,B, TOOL:/POINTER ~ REGEX, TOOL:/POINTER MIN..MAX, TOOL:/POINTER <= N, or TOOL:/POINTER absent"
    )]
    Syntax(String),
    /// A JSON pointer must start with `/`.
    #[error("{0:?}: a JSON pointer starts with '/'")]
    Pointer(String),
    /// The regular expression does not compile.
    #[error("regular expression {0:?} is not valid")]
    Regex(String),
    /// A path glob must be absolute.
    #[error("path glob {0:?} must be absolute")]
    RelativeGlob(String),
}

/// Why a call was refused by an argument rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {pointer} refused by rule {rule}: {why}")]
pub struct ArgDenial {
    /// The rule, as it reads on the command line.
    pub rule: String,
    /// The argument (a concrete pointer).
    pub pointer: String,
    /// What is wrong.
    pub why: String,
}

impl ArgRule {
    /// Parses the command-line form: `TOOL:/POINTER=GLOB` (a path), `TOOL:/POINTER in A,B`,
    /// `TOOL:/POINTER ~ REGEX`, `TOOL:/POINTER MIN..MAX` (either may be empty),
    /// `TOOL:/POINTER <= N` (length), `TOOL:/POINTER absent`.
    pub fn parse(text: &str) -> Result<ArgRule, ArgRuleError> {
        let bad = || ArgRuleError::Syntax(text.to_owned());
        let (tool, rest) = text.split_once(':').ok_or_else(bad)?;
        if tool.is_empty() {
            return Err(bad());
        }
        let mut rule = ArgRule {
            tool: tool.to_owned(),
            ..ArgRule::default()
        };
        let rest = rest.trim();
        let pointer = if let Some((p, v)) = rest.split_once(" in ") {
            rule.one_of = Some(v.split(',').map(|s| s.trim().to_owned()).collect());
            p
        } else if let Some((p, v)) = rest.split_once(" ~ ") {
            rule.regex = Some(v.trim().to_owned());
            p
        } else if let Some((p, v)) = rest.split_once("<=") {
            rule.max_len = Some(v.trim().parse().map_err(|_| bad())?);
            p
        } else if let Some(p) = rest.strip_suffix(" absent") {
            rule.absent = true;
            p
        } else if let Some((p, v)) = rest.split_once('=') {
            rule.path = Some(v.trim().to_owned());
            p
        } else if let Some((p, v)) = rest.split_once(' ') {
            let (lo, hi) = v.trim().split_once("..").ok_or_else(bad)?;
            let num = |s: &str| -> Result<Option<i64>, ArgRuleError> {
                let s = s.trim();
                if s.is_empty() {
                    Ok(None)
                } else {
                    s.parse().map(Some).map_err(|_| bad())
                }
            };
            rule.min = num(lo)?;
            rule.max = num(hi)?;
            if rule.min.is_none() && rule.max.is_none() {
                return Err(bad());
            }
            p
        } else {
            return Err(bad());
        };
        rule.pointer = pointer.trim().to_owned();
        rule.validate()?;
        Ok(rule)
    }

    /// Checks that the rule can be applied (pointer, regex, absolute path glob).
    pub fn validate(&self) -> Result<(), ArgRuleError> {
        if !self.pointer.starts_with('/') {
            return Err(ArgRuleError::Pointer(self.pointer.clone()));
        }
        if let Some(re) = &self.regex {
            compile(re).ok_or_else(|| ArgRuleError::Regex(re.clone()))?;
        }
        if let Some(glob) = &self.path
            && !glob.starts_with('/')
        {
            return Err(ArgRuleError::RelativeGlob(glob.clone()));
        }
        Ok(())
    }

    /// The rule as it reads on the command line.
    pub fn describe(&self) -> String {
        let p = format!("{}:{}", self.tool, self.pointer);
        let mut parts = Vec::new();
        if let Some(g) = &self.path {
            parts.push(format!("{p}={g}"));
        }
        if let Some(set) = &self.one_of {
            parts.push(format!("{p} in {}", set.join(",")));
        }
        if let Some(re) = &self.regex {
            parts.push(format!("{p} ~ {re}"));
        }
        if self.min.is_some() || self.max.is_some() {
            let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
            parts.push(format!("{p} {}..{}", n(self.min), n(self.max)));
        }
        if let Some(n) = self.max_len {
            parts.push(format!("{p} <= {n}"));
        }
        if self.absent {
            parts.push(format!("{p} absent"));
        }
        parts.join("; ")
    }
}

fn compile(re: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// The values at `pointer` in `args` (`*` segments expanded), with their concrete pointers.
fn select<'a>(args: &'a Value, pointer: &str) -> Vec<(String, &'a Value)> {
    let mut found = vec![(String::new(), args)];
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for (at, v) in found {
            match (segment.as_str(), v) {
                ("*", Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        next.push((format!("{at}/{i}"), item));
                    }
                }
                ("*", Value::Object(map)) => {
                    for (k, item) in map {
                        next.push((
                            format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                            item,
                        ));
                    }
                }
                (key, Value::Object(map)) => {
                    if let Some(item) = map.get(key) {
                        next.push((format!("{at}/{raw}"), item));
                    }
                }
                (index, Value::Array(items)) => {
                    if let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        next.push((format!("{at}/{raw}"), item));
                    }
                }
                _ => {}
            }
        }
        found = next;
    }
    found
}

/// Characters that look like `/`, `\` or `.` without being them.
fn look_alike(c: char) -> bool {
    matches!(
        c,
        '\u{2215}'
            | '\u{2044}'
            | '\u{ff0f}'
            | '\u{29f8}'
            | '\u{2571}'
            | '\u{ff3c}'
            | '\u{29f5}'
            | '\u{ff0e}'
            | '\u{2024}'
            | '\u{fe52}'
            | '\u{3002}'
            | '\u{2025}'
            | '\u{2026}'
    )
}

/// `path` with `.` and `..` resolved; refused if it is relative (the tool server, not the
/// rule, decides what it is relative to), climbs above the root, or holds text something
/// further on might decode.
pub fn normalise(path: &str) -> Result<String, &'static str> {
    if path.contains('\0') || path.contains('\\') {
        return Err("NUL or backslash in a path");
    }
    if path.chars().any(look_alike) {
        return Err("a look-alike of '/', '\\' or '.' in a path");
    }
    let b = path.as_bytes();
    if b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        return Err("a percent escape in a path");
    }
    if !path.starts_with('/') {
        return Err("a relative path (the tool server decides what it is relative to)");
    }
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err("'..' above the root");
                }
            }
            other => segments.push(other),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The literal directory a path glob starts with (`/srv/docs` for `/srv/docs/**/*.md`).
fn glob_base(glob: &str) -> String {
    let literal: Vec<&str> = glob
        .split('/')
        .take_while(|s| !s.contains('*') && !s.contains('?'))
        .collect();
    let base = literal.join("/");
    if base.is_empty() { "/".into() } else { base }
}

/// Whether normalised `path` matches `glob` segment by segment (`**`: any number of
/// segments, including none; `*` inside a segment never crosses a `/`).
pub fn path_matches(glob: &str, path: &str) -> bool {
    let g: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    fn go(g: &[&str], p: &[&str]) -> bool {
        match g.split_first() {
            None => p.is_empty(),
            Some((&"**", rest)) => (0..=p.len()).any(|skip| go(rest, &p[skip..])),
            Some((seg, rest)) => match p.split_first() {
                Some((first, tail)) => glob_match(seg, first) && go(rest, tail),
                None => false,
            },
        }
    }
    go(&g, &p)
}

/// Checks the `arguments` of a call of `tool` against every rule that applies. `resolve`
/// turns a normalised path into the one the tool host would really open (symlinks resolved
/// where the path exists); it is also applied to each glob's literal directory.
pub fn check(
    rules: &[ArgRule],
    tool: &str,
    args: &Value,
    resolve: &dyn Fn(&str) -> String,
) -> Result<(), ArgDenial> {
    for rule in rules.iter().filter(|r| glob_match(&r.tool, tool)) {
        let deny = |pointer: &str, why: String| ArgDenial {
            rule: rule.describe(),
            pointer: pointer.to_owned(),
            why,
        };
        let found = select(args, &rule.pointer);
        if rule.absent {
            if let Some((at, _)) = found.first() {
                return Err(deny(at, "it must be absent".into()));
            }
            continue;
        }
        for (at, value) in found {
            check_value(rule, value, resolve).map_err(|why| deny(&at, why))?;
        }
    }
    Ok(())
}

fn check_value(
    rule: &ArgRule,
    value: &Value,
    resolve: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let text = value.as_str();
    if let Some(glob) = &rule.path {
        let s = text.ok_or("a path must be a string")?;
        let base = resolve(&glob_base(glob));
        let normal = normalise(s).map_err(str::to_owned)?;
        let real = resolve(&normal);
        let glob = format!("{base}{}", &glob[glob_base(glob).len()..]);
        if !path_matches(&glob, &real) {
            return Err(format!("{real:?} is not under {glob}"));
        }
    }
    if let Some(set) = &rule.one_of {
        let s = text.ok_or("must be a string")?;
        if !set.iter().any(|v| v == s) {
            return Err(format!("{s:?} is not one of {}", set.join(", ")));
        }
    }
    if let Some(re) = &rule.regex {
        let s = text.ok_or("must be a string")?;
        let compiled = compile(re).ok_or("the rule's regular expression is not valid")?;
        if !compiled.is_match(s) {
            return Err(format!("does not match {re}"));
        }
    }
    if rule.min.is_some() || rule.max.is_some() {
        let n = value.as_f64().ok_or("must be a number")?;
        if rule.min.is_some_and(|m| n < m as f64) || rule.max.is_some_and(|m| n > m as f64) {
            return Err(format!("{n} is out of range"));
        }
    }
    if let Some(max) = rule.max_len {
        let len = match value {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(a) => a.len() as u64,
            _ => return Err("a length applies to a string or an array".into()),
        };
        if len > max {
            return Err(format!("{len} long, at most {max}"));
        }
    }
    Ok(())
}

/// Whether `child` narrows (or equals) `parent`: every parent rule is also a child rule.
pub fn narrows(child: &[ArgRule], parent: &[ArgRule]) -> bool {
    parent.iter().all(|p| child.contains(p))
}

#[cfg(test)]
mod tests;
