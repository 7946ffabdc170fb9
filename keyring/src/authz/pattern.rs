//! The one pattern type rule lists match with, in the policy and in capability tokens: tool,
//! prompt and method names by `*`-glob, resources by URI prefix (normalised, segment-wise:
//! [`crate::uri`]). Matching a value and deciding whether one pattern covers another (for
//! narrowing delegated scopes) live together, so the two can never disagree.

/// How a list's entries match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `*`-globs over names (any number of `*`, each matching any run of characters).
    Glob,
    /// URI prefixes over resource URIs.
    UriPrefix,
}

/// One entry of a rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern<'a> {
    kind: PatternKind,
    text: &'a str,
}

impl<'a> Pattern<'a> {
    /// A `*`-glob over names.
    pub fn glob(text: &'a str) -> Self {
        Pattern {
            kind: PatternKind::Glob,
            text,
        }
    }

    /// A URI prefix over resource URIs.
    pub fn uri_prefix(text: &'a str) -> Self {
        Pattern {
            kind: PatternKind::UriPrefix,
            text,
        }
    }

    /// An entry of a list of `kind`.
    pub fn new(kind: PatternKind, text: &'a str) -> Self {
        Pattern { kind, text }
    }

    /// Whether `value` matches (a URI that does not parse matches nothing).
    pub fn matches(&self, value: &str) -> bool {
        match self.kind {
            PatternKind::Glob => glob_match(self.text, value),
            PatternKind::UriPrefix => crate::uri::prefix_covers(self.text, value),
        }
    }

    /// Whether every value `child` matches is also matched by this pattern (conservative:
    /// when unsure, no).
    pub fn covers(&self, child: &Pattern<'_>) -> bool {
        match (self.kind, child.kind) {
            (PatternKind::Glob, PatternKind::Glob) => glob_covers(self.text, child.text),
            (PatternKind::UriPrefix, PatternKind::UriPrefix) => {
                crate::uri::prefix_covers(self.text, child.text)
            }
            _ => false,
        }
    }
}

/// Whether any of `patterns` (of `kind`) matches `value`.
pub fn any_matches(kind: PatternKind, patterns: &[String], value: &str) -> bool {
    patterns
        .iter()
        .any(|p| Pattern::new(kind, p).matches(value))
}

/// Whether list `child` narrows (or equals) list `parent`; `None` means unrestricted.
pub fn list_narrows(
    kind: PatternKind,
    child: &Option<Vec<String>>,
    parent: &Option<Vec<String>>,
) -> bool {
    match (child, parent) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(c), Some(p)) => c.iter().all(|ci| {
            p.iter()
                .any(|pi| Pattern::new(kind, pi).covers(&Pattern::new(kind, ci)))
        }),
    }
}

/// `*`-glob match (any number of `*`, each matching any run of characters).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether every name `child` matches is also matched by `parent` (conservative: a glob child
/// must equal a parent pattern, or the parent must be `*`, or the child's fixed prefix must
/// extend a `prefix*` parent).
fn glob_covers(parent: &str, child: &str) -> bool {
    if parent == "*" || child == parent {
        return true;
    }
    if !child.contains('*') {
        return glob_match(parent, child);
    }
    match (parent.strip_suffix('*'), child.strip_suffix('*')) {
        (Some(pp), Some(cp)) if !pp.contains('*') && !cp.contains('*') => cp.starts_with(pp),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_and_cover() {
        let g = Pattern::glob("read_*");
        assert!(g.matches("read_file") && !g.matches("write_file"));
        assert!(g.covers(&Pattern::glob("read_text*")));
        assert!(g.covers(&Pattern::glob("read_file")));
        assert!(!g.covers(&Pattern::glob("*_file")));
        assert!(Pattern::glob("*").covers(&Pattern::glob("a*b*c")));
        assert!(!Pattern::glob("a*c").covers(&Pattern::glob("a*")));
    }

    #[test]
    fn uri_prefixes_match_and_cover_by_segment() {
        let p = Pattern::uri_prefix("file:///srv/docs/");
        assert!(p.matches("file:///srv/docs/a.txt"));
        assert!(!p.matches("file:///srv/docs-private/a.txt"));
        assert!(!p.matches("file:///srv/docs/../secret"));
        assert!(p.covers(&Pattern::uri_prefix("file:///srv/docs/sub/")));
        assert!(!p.covers(&Pattern::uri_prefix("file:///srv/")));
    }

    #[test]
    fn kinds_never_cover_each_other() {
        assert!(!Pattern::glob("*").covers(&Pattern::uri_prefix("file:///")));
        assert!(!Pattern::uri_prefix("file:///").covers(&Pattern::glob("x")));
    }

    #[test]
    fn lists_narrow_only_within_their_parent() {
        let parent = Some(vec!["read_*".to_owned()]);
        assert!(list_narrows(
            PatternKind::Glob,
            &Some(vec!["read_file".into()]),
            &parent
        ));
        assert!(!list_narrows(PatternKind::Glob, &None, &parent));
        assert!(list_narrows(PatternKind::Glob, &None, &None));
        assert!(!list_narrows(
            PatternKind::Glob,
            &Some(vec!["write".into()]),
            &parent
        ));
    }
}
