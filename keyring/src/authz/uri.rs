//! Resource URI prefixes, matched the way a server resolves them: both the rule and the URI
//! asked for are parsed and normalised first (scheme and host lowercased, the path
//! percent-decoded, `.` segments dropped, repeated slashes collapsed), a `..` segment (raw or
//! encoded) or an encoded slash refuses the URI outright, and a prefix matches only on
//! path-segment boundaries: `file:///srv` covers `file:///srv/a` but not `file:///srv-secret`.

/// Why a URI cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:`.
    #[error("not a URI (no scheme)")]
    NoScheme,
    /// A `..` path segment (possibly percent-encoded): refused, never resolved.
    #[error("a \"..\" path segment")]
    DotDot,
    /// A percent-encoded `/`, `\` or NUL, or a bad escape.
    #[error("a disallowed or malformed percent escape in the path")]
    BadEscape,
}

/// A parsed, normalised URI: `scheme`, `authority` (empty for `file:///`), path segments,
/// and the rest (query and fragment, kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalUri {
    scheme: String,
    authority: Option<String>,
    segments: Vec<String>,
    rest: String,
}

impl NormalUri {
    /// Parses and normalises `uri`.
    pub fn parse(uri: &str) -> Result<NormalUri, UriError> {
        let (scheme, after) = uri.split_once(':').ok_or(UriError::NoScheme)?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError::NoScheme);
        }
        let (authority, path_and_rest) = match after.strip_prefix("//") {
            Some(a) => {
                let end = a.find(['/', '?', '#']).unwrap_or(a.len());
                (Some(a[..end].to_ascii_lowercase()), &a[end..])
            }
            None => (None, after),
        };
        let end = path_and_rest
            .find(['?', '#'])
            .unwrap_or(path_and_rest.len());
        let (path, rest) = path_and_rest.split_at(end);
        let mut segments = Vec::new();
        for raw in path.split('/') {
            let segment = decode(raw)?;
            match segment.as_str() {
                "" | "." => {}
                ".." => return Err(UriError::DotDot),
                _ => segments.push(segment),
            }
        }
        // A query or fragment is kept as written, but a `..` in it (raw or encoded) is refused
        // too: some servers strip the scheme and resolve the rest as a path.
        let decoded_rest = rest.replace("%2e", ".").replace("%2E", ".");
        if decoded_rest.contains("..") {
            return Err(UriError::DotDot);
        }
        Ok(NormalUri {
            scheme: scheme.to_ascii_lowercase(),
            authority,
            segments,
            rest: rest.to_owned(),
        })
    }

    /// Whether this URI, taken as a prefix, covers `other`: same scheme and authority, and
    /// this path's segments are the first segments of `other`'s path. A prefix with a query
    /// or fragment covers only exactly that URI.
    pub fn covers(&self, other: &NormalUri) -> bool {
        if self.scheme != other.scheme || self.authority != other.authority {
            return false;
        }
        if !self.rest.is_empty() {
            return self == other;
        }
        other.segments.len() >= self.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == b)
    }
}

/// Percent-decodes one path segment, refusing escapes that would change the segmentation
/// (`%2F`, `%5C`) or carry NUL, and malformed escapes.
fn decode(segment: &str) -> Result<String, UriError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(UriError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::BadEscape)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| UriError::BadEscape)?;
            if matches!(byte, b'/' | b'\\' | 0) {
                return Err(UriError::BadEscape);
            }
            out.push(byte);
            i += 3;
        } else {
            if bytes[i] == b'\\' {
                return Err(UriError::BadEscape);
            }
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::BadEscape)
}

/// Whether any of `prefixes` covers `uri` (both normalised; a URI or rule that does not
/// parse is covered by nothing).
pub fn covered_by_any(prefixes: &[String], uri: &str) -> Result<bool, UriError> {
    let uri = NormalUri::parse(uri)?;
    Ok(prefixes
        .iter()
        .filter_map(|p| NormalUri::parse(p).ok())
        .any(|p| p.covers(&uri)))
}

/// Whether prefix `parent` covers prefix `child` (for narrowing delegated scopes).
pub fn prefix_covers(parent: &str, child: &str) -> bool {
    match (NormalUri::parse(parent), NormalUri::parse(child)) {
        (Ok(p), Ok(c)) => p.covers(&c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(prefix: &str, uri: &str) -> Result<bool, UriError> {
        covered_by_any(&[prefix.to_owned()], uri)
    }

    #[test]
    fn traversal_encodings_and_segment_boundaries() {
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/a.txt"),
            Ok(true)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/sub/b"),
            Ok(true)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/../secret"),
            Err(UriError::DotDot)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/%2e%2e/secret"),
            Err(UriError::DotDot)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/%2E%2e/secret"),
            Err(UriError::DotDot)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/..%2fsecret"),
            Err(UriError::BadEscape)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/a%5c..%5csecret"),
            Err(UriError::BadEscape)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/x\\..\\y"),
            Err(UriError::BadEscape)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/%zz"),
            Err(UriError::BadEscape)
        );
        assert_eq!(covers("file:///srv", "file:///srv-secret/x"), Ok(false));
        assert_eq!(covers("file:///srv", "file:///srv/x"), Ok(true));
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/./docs//a"),
            Ok(true)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/%64ocs/a"),
            Ok(true)
        );
        assert_eq!(covers("file:///srv/docs/", "FILE:///srv/docs/a"), Ok(true));
        assert_eq!(covers("file:///srv/docs/", "http:///srv/docs/a"), Ok(false));
        assert_eq!(
            covers("https://Example.com/api", "https://example.com/api/v1"),
            Ok(true)
        );
        assert_eq!(
            covers("https://example.com/api", "https://example.com.evil/api"),
            Ok(false)
        );
        assert_eq!(covers("x", "nonsense"), Err(UriError::NoScheme));
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/#/../../etc/passwd"),
            Err(UriError::DotDot)
        );
        assert_eq!(
            covers("file:///srv/docs/", "file:///srv/docs/a?p=%2e%2E/x"),
            Err(UriError::DotDot)
        );
    }

    #[test]
    fn delegated_prefixes_narrow_on_segments() {
        assert!(prefix_covers("file:///srv/", "file:///srv/docs/"));
        assert!(!prefix_covers("file:///srv", "file:///srv-secret/"));
        assert!(!prefix_covers("file:///srv/docs/", "file:///srv/"));
        assert!(!prefix_covers("file:///srv/", "file:///srv/../etc"));
    }
}
