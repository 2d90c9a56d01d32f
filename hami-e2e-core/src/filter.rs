//! Label expressions (`--label-filter 'nvidia && !slow || smoke'`) and name filters.
//!
//! Pure code, no I/O: a parse error names the position of the problem.
//!
//! Grammar, from lowest to highest precedence (as in Ginkgo and C):
//! ```text
//! expr    := or
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := label | "(" expr ")"
//! label   := [A-Za-z0-9_.:/-]+
//! ```

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// A parsed label expression.
///
/// # Examples
///
/// ```
/// use hami_e2e_core::LabelExpr;
///
/// let expr = LabelExpr::parse("nvidia && !slow || smoke")?;
/// assert!(expr.matches(["nvidia"]));
/// assert!(!expr.matches(["nvidia", "slow"]));
/// assert!(expr.matches(["slow", "smoke"]));
///
/// let err = LabelExpr::parse("nvidia && (slow").unwrap_err();
/// assert!(err.to_string().contains("position 15"));
/// # Ok::<(), hami_e2e_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelExpr {
    /// True when the scenario carries this label.
    Label(String),
    /// Negation.
    Not(Box<LabelExpr>),
    /// Both hold.
    And(Box<LabelExpr>, Box<LabelExpr>),
    /// Either holds.
    Or(Box<LabelExpr>, Box<LabelExpr>),
}

/// Whether `c` may appear in a label.
pub(crate) fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Label(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

struct Parser<'a> {
    expression: &'a str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl LabelExpr {
    /// Parses an expression.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLabelFilter`] naming the character position of the problem.
    pub fn parse(expression: &str) -> Result<Self> {
        let tokens = tokenize(expression)?;
        let mut parser = Parser {
            expression,
            tokens,
            pos: 0,
        };
        if parser.tokens.is_empty() {
            return Err(parser.error(0, "empty expression"));
        }
        let expr = parser.or()?;
        if let Some((at, tok)) = parser.tokens.get(parser.pos) {
            let msg = match tok {
                Token::Close => "unmatched `)`".to_string(),
                _ => "expected `&&` or `||` between labels".to_string(),
            };
            return Err(parser.error(*at, msg));
        }
        Ok(expr)
    }

    /// Whether a scenario with `labels` matches.
    pub fn matches<I, S>(&self, labels: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set: BTreeSet<String> = labels.into_iter().map(|s| s.as_ref().to_string()).collect();
        self.eval(&set)
    }

    fn eval(&self, labels: &BTreeSet<String>) -> bool {
        match self {
            LabelExpr::Label(l) => labels.contains(l),
            LabelExpr::Not(e) => !e.eval(labels),
            LabelExpr::And(a, b) => a.eval(labels) && b.eval(labels),
            LabelExpr::Or(a, b) => a.eval(labels) || b.eval(labels),
        }
    }
}

fn tokenize(expression: &str) -> Result<Vec<(usize, Token)>> {
    let chars: Vec<char> = expression.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: &str| Error::InvalidLabelFilter {
        expression: expression.to_string(),
        position,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((i, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((i, Token::Close));
                i += 1;
            }
            '!' => {
                out.push((i, Token::Not));
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(err(i, &format!("expected `{c}{c}`")));
                }
                out.push((i, if c == '&' { Token::And } else { Token::Or }));
                i += 2;
            }
            c if is_label_char(c) => {
                let start = i;
                while i < chars.len() && is_label_char(chars[i]) {
                    i += 1;
                }
                out.push((start, Token::Label(chars[start..i].iter().collect())));
            }
            other => return Err(err(i, &format!("unexpected character `{other}`"))),
        }
    }
    Ok(out)
}

impl Parser<'_> {
    fn error(&self, position: usize, message: impl Into<String>) -> Error {
        Error::InvalidLabelFilter {
            expression: self.expression.to_string(),
            position,
            message: message.into(),
        }
    }

    fn end(&self) -> usize {
        self.expression.chars().count()
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn or(&mut self) -> Result<LabelExpr> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = LabelExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<LabelExpr> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.unary()?;
            left = LabelExpr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<LabelExpr> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(LabelExpr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<LabelExpr> {
        let Some((at, tok)) = self.tokens.get(self.pos).cloned() else {
            return Err(self.error(self.end(), "expected a label or `(`, found the end"));
        };
        self.pos += 1;
        match tok {
            Token::Label(l) => Ok(LabelExpr::Label(l)),
            Token::Open => {
                let inner = self.or()?;
                match self.tokens.get(self.pos) {
                    Some((_, Token::Close)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some((at, _)) => Err(self.error(*at, "expected `)`")),
                    None => {
                        Err(self.error(self.end(), format!("missing `)` for `(` at position {at}")))
                    }
                }
            }
            Token::Close => Err(self.error(at, "expected a label or `(`, found `)`")),
            Token::And | Token::Or => {
                Err(self.error(at, "expected a label or `(` before the operator"))
            }
            Token::Not => unreachable!("handled in unary"),
        }
    }
}

/// Which scenarios a run selects by name, as libtest does.
///
/// Positional filters select names containing any of them (or equal to one, with
/// `exact`); `skip` removes names containing any skip pattern (or equal, with `exact`).
/// `/` and `::` are the same separator in filters and names.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    /// Positional filters; empty selects everything.
    pub filters: Vec<String>,
    /// `--skip` patterns.
    pub skip: Vec<String>,
    /// `--exact`: compare whole names.
    pub exact: bool,
}

impl NameFilter {
    /// Whether `name` (canonical, with `::`) is selected.
    pub fn matches(&self, name: &str) -> bool {
        let hit = |pattern: &String| {
            let pattern = normalize_separators(pattern);
            if self.exact {
                name == pattern
            } else {
                name.contains(&pattern)
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skip.iter().any(hit)
    }
}

/// Replaces `/` with `::`, the canonical separator of scenario names.
pub(crate) fn normalize_separators(s: &str) -> String {
    s.replace('/', "::")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(expr: &str, labels: &[&str]) -> bool {
        LabelExpr::parse(expr).unwrap().matches(labels)
    }

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        assert!(m("a && b || c", &["c"]));
        assert!(!m("a && (b || c)", &["c"]));
        assert!(m("!a && b", &["b"]));
        assert!(!m("!(a || b)", &["b"]));
        assert!(m("!!a", &["a"]));
        assert!(m(
            "vendor:nvidia && hami/smoke",
            &["vendor:nvidia", "hami/smoke"]
        ));
    }

    fn err_at(expr: &str) -> (usize, String) {
        match LabelExpr::parse(expr).unwrap_err() {
            Error::InvalidLabelFilter {
                position, message, ..
            } => (position, message),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn errors_name_the_position() {
        assert_eq!(err_at("a & b").0, 2);
        assert_eq!(err_at("a && ").0, 5);
        assert_eq!(err_at("(a").0, 2);
        assert_eq!(err_at("a)").0, 1);
        assert_eq!(err_at("a b").0, 2);
        assert_eq!(err_at("").0, 0);
        assert_eq!(err_at("a && #").0, 5);
        assert_eq!(err_at("|| a").0, 0);
        assert!(err_at("(a").1.contains("missing `)`"));
    }

    #[test]
    fn error_message_points_at_the_problem() {
        let text = LabelExpr::parse("nvidia && (slow").unwrap_err().to_string();
        assert!(text.contains("position 15"), "{text}");
        assert!(
            text.ends_with("\n  nvidia && (slow\n                 ^"),
            "{text:?}"
        );
    }

    #[test]
    fn name_filters_like_libtest() {
        let f = NameFilter {
            filters: vec!["nvidia".into()],
            skip: vec!["slow".into()],
            exact: false,
        };
        assert!(f.matches("nvidia::allocation"));
        assert!(!f.matches("nvidia::slow::x"));
        assert!(!f.matches("hygon::allocation"));
        let f = NameFilter {
            filters: vec!["a/b".into()],
            skip: vec![],
            exact: true,
        };
        assert!(f.matches("a::b"));
        assert!(!f.matches("a::b::c"));
        assert!(NameFilter::default().matches("anything"));
    }
}
