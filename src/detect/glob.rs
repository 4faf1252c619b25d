//! Case-insensitive glob patterns for allowlists, privilege rules and time-zone rules: `*`
//! matches any run of characters, `?` one character, `\*` and `\?` themselves.

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Lit(u8),
    One,
    Any,
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Self {
        let mut tokens = Vec::new();
        let mut bytes = pattern.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' => match bytes.next() {
                    Some(n) => tokens.push(Token::Lit(n.to_ascii_lowercase())),
                    None => tokens.push(Token::Lit(b'\\')),
                },
                b'*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                }
                b'?' => tokens.push(Token::One),
                b => tokens.push(Token::Lit(b.to_ascii_lowercase())),
            }
        }
        Glob {
            text: pattern.to_string(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `s` matches (ASCII case-insensitively; `?` matches one byte).
    pub fn matches(&self, s: &str) -> bool {
        let chars = s.as_bytes();
        // Iterative matching with backtracking to the last `*`.
        let (mut p, mut i) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while i < chars.len() {
            match self.tokens.get(p) {
                Some(Token::Lit(c)) if *c == chars[i].to_ascii_lowercase() => {
                    p += 1;
                    i += 1;
                }
                Some(Token::One) => {
                    p += 1;
                    i += 1;
                }
                Some(Token::Any) => {
                    star = Some((p, i));
                    p += 1;
                }
                _ => match star {
                    Some((sp, si)) => {
                        p = sp + 1;
                        i = si + 1;
                        star = Some((sp, si + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Any)
    }
}

/// A list of globs; matches when any does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobSet(Vec<Glob>);

impl GlobSet {
    /// Compiles patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        GlobSet(patterns.iter().map(|p| Glob::new(p.as_ref())).collect())
    }

    /// Whether any pattern matches.
    pub fn matches(&self, s: &str) -> bool {
        self.0.iter().any(|g| g.matches(s))
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shells_do_without_case() {
        let g = Glob::new("vault-policy:*admin*");
        assert!(g.matches("vault-policy:org-ADMIN-rw"));
        assert!(!g.matches("vault-policy:reader"));
        assert!(Glob::new("github:acme/*").matches("github:acme/api/.github/workflows/x.yml"));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("aws-action:\\*").matches("aws-action:*"));
        assert!(!Glob::new("aws-action:\\*").matches("aws-action:s3:GetObject"));
        assert!(Glob::new("aws-action:*:\\*").matches("aws-action:s3:*"));
        assert!(!Glob::new("aws-action:*:\\*").matches("aws-action:s3:GetObject"));
        assert!(Glob::new("*a*b*c").matches("xxaxxbxxc"));
        assert!(!Glob::new("*a*b*c").matches("xxaxxbxxcx"));
    }
}
