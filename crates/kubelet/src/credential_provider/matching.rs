//! Upstream's image matching for credential providers (pkg/credentialprovider URLsMatchStr):
//! both sides read as scheme-less URLs; the hosts must have as many dot-separated parts, each
//! matching as a glob (`*`, `?`, `[...]`); the ports must be equal; the image's path must start
//! with the pattern's path.

/// A scheme-less URL split into host parts, port and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemelessUrl {
    host_parts: Vec<String>,
    port: String,
    path: String,
}

/// Errors in a `matchImages` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("empty host")]
    EmptyHost,
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid glob in {0:?}")]
    Glob(String),
}

/// Parses `host[:port][/path]` (ParseSchemelessURL).
pub fn parse(text: &str) -> Result<SchemelessUrl, Error> {
    let (authority, path) = match text.find('/') {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, p),
        _ => (authority, ""),
    };
    if host.is_empty() {
        return Err(Error::EmptyHost);
    }
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(Error::Port(port.to_string()));
    }
    for part in host.split('.') {
        glob_match(part, "").map_err(|_| Error::Glob(text.to_string()))?;
    }
    Ok(SchemelessUrl {
        host_parts: host.split('.').map(str::to_string).collect(),
        port: port.to_string(),
        path: path.to_string(),
    })
}

/// Whether `image` matches the `pattern` (URLsMatchStr); an unparsable side never matches.
pub fn matches(pattern: &str, image: &str) -> bool {
    let (Ok(glob), Ok(target)) = (parse(pattern), parse(image)) else { return false };
    glob.port == target.port
        && glob.host_parts.len() == target.host_parts.len()
        && target.path.starts_with(&glob.path)
        && glob.host_parts.iter().zip(&target.host_parts).all(|(g, t)| glob_match(g, t).unwrap_or(false))
}

/// Go's filepath.Match for one host part (no separators inside): `*`, `?`, `[...]` with
/// ranges and `^` negation, `\` escapes. An unterminated class is an error.
fn glob_match(pattern: &str, name: &str) -> Result<bool, ()> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate the pattern once (Go reports ErrBadPattern even without a match attempt).
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '[' => i = class_end(&p, i).ok_or(())?,
            '\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(match_from(&p, &n))
}

/// The index after the class starting at `p[start] == '['`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some(i + 1);
        }
        if p[i] == '\\' {
            i += 1;
        }
        first = false;
        i += 1;
    }
    None
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negate, body) = match class.first() {
        Some('^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        let lo = if body[i] == '\\' && i + 1 < body.len() {
            i += 1;
            body[i]
        } else {
            body[i]
        };
        let hi = if i + 2 < body.len() && body[i + 1] == '-' {
            i += 2;
            body[i]
        } else {
            lo
        };
        hit |= lo <= c && c <= hi;
        i += 1;
    }
    hit != negate
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|k| match_from(&p[1..], &n[k..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = class_end(p, 0) else { return false };
            !n.is_empty() && class_matches(&p[1..end - 1], n[0]) && match_from(&p[end..], &n[1..])
        }
        Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && match_from(&p[2..], &n[1..]),
        Some(c) => !n.is_empty() && n[0] == *c && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_match_table() {
        for (pattern, image, want) in [
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.foo.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "bad.kubernetes.io", false),
            ("*.kubernetes.io/foo", "prefix.kubernetes.io/foo/bar", true),
            ("*.kubernetes.io/foo", "prefix.kubernetes.io/bar", false),
            ("kubernetes.io:8080", "kubernetes.io:8080/image:tag", true),
            ("kubernetes.io:8080", "kubernetes.io/image", false),
            ("127.0.0.1:5001", "127.0.0.1:5001/private:1", true),
            ("127.0.0.1:5001", "127.0.0.1:5000/private:1", false),
            ("registry.[a-c].io", "registry.b.io/x", true),
            ("registry.[^a-c].io", "registry.b.io/x", false),
            ("r?g.io", "reg.io/x", true),
        ] {
            assert_eq!(matches(pattern, image), want, "{pattern} vs {image}");
        }
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(parse(""), Err(Error::EmptyHost));
        assert_eq!(parse(":5000"), Err(Error::EmptyHost));
        assert!(matches!(parse("host:port"), Err(Error::Port(_))));
        assert!(matches!(parse("reg.[a-c.io"), Err(Error::Glob(_))));
    }
}
