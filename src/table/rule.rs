//! Request-matching rules: Traefik v1 syntax (`Host:a,b;PathPrefix:/api`) parsed into an
//! expression tree that the data plane evaluates without allocating.
//!
//! Pure: no I/O. The tree has `And`/`Or`/`Not` so that Traefik v2's
//! `Host(`a`) && PathPrefix(`/b`)` syntax can produce the same type.

use std::fmt;
use std::sync::Arc;

/// A parsed rule; evaluated once per request against host and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Every branch must match.
    And(Vec<Rule>),
    /// At least one branch must match.
    Or(Vec<Rule>),
    /// The branch must not match.
    Not(Box<Rule>),
    /// Host header (port stripped), compared case-insensitively; stored lowercase.
    Host(Arc<str>),
    /// Exact request path.
    Path(Arc<str>),
    /// Request path starts with this string (Traefik v1 compares bytes, not segments).
    PathPrefix(Arc<str>),
    /// Request method, stored uppercase.
    Method(Arc<str>),
}

/// The request facts a rule looks at, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Host without port; may be empty when the client sent none.
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    /// The request came over TLS.
    pub tls: bool,
}

/// What a matched router does to the path before forwarding (Traefik v1 `PathStrip`,
/// `PathPrefixStrip`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathRewrite {
    #[default]
    Keep,
    /// Remove the matched prefix; the candidates are tried longest first.
    StripPrefix(Arc<[Box<str>]>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("unexpected `{found}` at byte {at}; expected {expected}")]
    Syntax {
        found: String,
        at: usize,
        expected: &'static str,
    },
    #[error("matcher `{0}` needs at least one argument")]
    NoArguments(String),
    #[error("empty rule")]
    Empty,
    #[error("`{0}` is not `Matcher:value` (Traefik v1 syntax, e.g. `PathPrefix:/`)")]
    Malformed(String),
    #[error("unknown matcher `{0}` (supported: Host, Path, PathPrefix, PathStrip, PathPrefixStrip, Method)")]
    UnknownMatcher(String),
    #[error("matcher `{0}` has an empty value")]
    EmptyValue(String),
    #[error("path `{0}` must start with `/`")]
    RelativePath(String),
}

/// A parsed rule plus the path rewrite its strip matchers ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRule {
    pub rule: Rule,
    pub rewrite: PathRewrite,
    /// Length of the source text; Traefik v1 breaks priority ties with it.
    pub source_len: usize,
    pub source: Arc<str>,
}

/// Parses Traefik v1 frontend rule syntax: matchers separated by `;` must all match, and a
/// matcher's comma-separated values are alternatives.
pub fn parse_v1(text: &str) -> Result<ParsedRule, RuleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(RuleError::Empty);
    }
    let mut all = Vec::new();
    let mut rewrite = PathRewrite::Keep;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (matcher, values) = part
            .split_once(':')
            .ok_or_else(|| RuleError::Malformed(part.to_owned()))?;
        let matcher = matcher.trim();
        let values: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(RuleError::EmptyValue(matcher.to_owned()));
        }
        let make: fn(&str) -> Rule = match matcher.to_ascii_lowercase().as_str() {
            "host" => |v| Rule::Host(v.to_ascii_lowercase().into()),
            "path" | "pathstrip" => |v| Rule::Path(v.into()),
            "pathprefix" | "pathprefixstrip" => |v| Rule::PathPrefix(v.into()),
            "method" => |v| Rule::Method(v.to_ascii_uppercase().into()),
            _ => return Err(RuleError::UnknownMatcher(matcher.to_owned())),
        };
        let is_path = matcher.to_ascii_lowercase().starts_with("path");
        if is_path {
            if let Some(bad) = values.iter().find(|v| !v.starts_with('/')) {
                return Err(RuleError::RelativePath((*bad).to_owned()));
            }
        }
        if matcher.eq_ignore_ascii_case("pathstrip")
            || matcher.eq_ignore_ascii_case("pathprefixstrip")
        {
            let mut prefixes: Vec<Box<str>> = values.iter().map(|v| (*v).into()).collect();
            prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
            rewrite = PathRewrite::StripPrefix(prefixes.into());
        }
        let mut alternatives: Vec<Rule> = values.into_iter().map(make).collect();
        all.push(if alternatives.len() == 1 {
            alternatives.pop().expect("one alternative")
        } else {
            Rule::Or(alternatives)
        });
    }
    if all.is_empty() {
        return Err(RuleError::Empty);
    }
    let rule = if all.len() == 1 {
        all.pop().expect("one matcher")
    } else {
        Rule::And(all)
    };
    Ok(ParsedRule {
        rule,
        rewrite,
        source_len: text.len(),
        source: text.into(),
    })
}

/// Parses Traefik v2/v3 rule syntax: matchers called with backquoted or double-quoted
/// arguments, combined with `&&`, `||`, `!` and parentheses, e.g.
/// ``Host(`a.example`) && (PathPrefix(`/api`) || Method(`POST`))``. `&&` binds tighter
/// than `||`, as in Traefik.
pub fn parse_v2(text: &str) -> Result<ParsedRule, RuleError> {
    let source = text.trim();
    if source.is_empty() {
        return Err(RuleError::Empty);
    }
    let mut p = V2Parser {
        text: source,
        pos: 0,
        rewrite: PathRewrite::Keep,
    };
    let rule = p.or()?;
    p.skip_ws();
    if p.pos < p.text.len() {
        return Err(p.unexpected("`&&`, `||` or the end of the rule"));
    }
    Ok(ParsedRule {
        rule,
        rewrite: p.rewrite,
        source_len: source.len(),
        source: source.into(),
    })
}

/// A recursive-descent parser over the rule text; `pos` is a byte offset.
struct V2Parser<'a> {
    text: &'a str,
    pos: usize,
    rewrite: PathRewrite,
}

impl V2Parser<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn unexpected(&self, expected: &'static str) -> RuleError {
        let found: String = self.text[self.pos..].chars().take(12).collect();
        RuleError::Syntax {
            found: if found.is_empty() {
                "end of rule".into()
            } else {
                found
            },
            at: self.pos,
            expected,
        }
    }

    fn or(&mut self) -> Result<Rule, RuleError> {
        let mut branches = vec![self.and()?];
        while self.eat("||") {
            branches.push(self.and()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().expect("one branch")
        } else {
            Rule::Or(branches)
        })
    }

    fn and(&mut self) -> Result<Rule, RuleError> {
        let mut all = vec![self.unary()?];
        while self.eat("&&") {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one term")
        } else {
            Rule::And(all)
        })
    }

    fn unary(&mut self) -> Result<Rule, RuleError> {
        if self.eat("!") {
            return Ok(Rule::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.unexpected("`)`"));
            }
            return Ok(inner);
        }
        self.matcher()
    }

    fn matcher(&mut self) -> Result<Rule, RuleError> {
        self.skip_ws();
        let start = self.pos;
        let name_len = self.text[start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(self.text.len() - start);
        if name_len == 0 {
            return Err(self.unexpected("a matcher such as Host(`...`)"));
        }
        let name = &self.text[start..start + name_len];
        self.pos += name_len;
        if !self.eat("(") {
            return Err(self.unexpected("`(`"));
        }
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if args.is_empty() && self.eat(")") {
                break;
            }
            args.push(self.string()?);
            if self.eat(")") {
                break;
            }
            if !self.eat(",") {
                return Err(self.unexpected("`,` or `)`"));
            }
        }
        if args.is_empty() {
            return Err(RuleError::NoArguments(name.to_owned()));
        }
        let make: fn(&str) -> Rule = match name {
            "Host" => |v| Rule::Host(v.to_ascii_lowercase().into()),
            "Path" => |v| Rule::Path(v.into()),
            "PathPrefix" => |v| Rule::PathPrefix(v.into()),
            "Method" => |v| Rule::Method(v.to_ascii_uppercase().into()),
            _ => return Err(RuleError::UnknownMatcher(name.to_owned())),
        };
        if name.starts_with("Path") {
            if let Some(bad) = args.iter().find(|a| !a.starts_with('/')) {
                return Err(RuleError::RelativePath(bad.clone()));
            }
        }
        if args.iter().any(String::is_empty) {
            return Err(RuleError::EmptyValue(name.to_owned()));
        }
        let mut alternatives: Vec<Rule> = args.iter().map(|a| make(a)).collect();
        Ok(if alternatives.len() == 1 {
            alternatives.pop().expect("one argument")
        } else {
            Rule::Or(alternatives)
        })
    }

    fn string(&mut self) -> Result<String, RuleError> {
        self.skip_ws();
        let quote = match self.text[self.pos..].chars().next() {
            Some(q @ ('`' | '"')) => q,
            _ => return Err(self.unexpected("a `quoted` argument")),
        };
        let body_start = self.pos + 1;
        let Some(len) = self.text[body_start..].find(quote) else {
            return Err(self.unexpected("a closing quote"));
        };
        self.pos = body_start + len + 1;
        Ok(self.text[body_start..body_start + len].to_owned())
    }
}

impl Rule {
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        match self {
            Rule::And(rules) => rules.iter().all(|r| r.matches(req)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(req)),
            Rule::Not(rule) => !rule.matches(req),
            Rule::Host(host) => req.host.eq_ignore_ascii_case(host),
            Rule::Path(path) => req.path == &**path,
            Rule::PathPrefix(prefix) => req.path.starts_with(&**prefix),
            Rule::Method(method) => req.method == &**method,
        }
    }
}

impl PathRewrite {
    /// The path to forward and the prefix taken off it (for `X-Forwarded-Prefix`); `None`
    /// when nothing changes, so the common case copies nothing.
    pub fn apply<'r>(&'r self, path: &str) -> Option<(String, &'r str)> {
        match self {
            PathRewrite::Keep => None,
            PathRewrite::StripPrefix(prefixes) => {
                let (rest, prefix) = prefixes
                    .iter()
                    .find_map(|p| Some((path.strip_prefix(&**p)?, &**p)))?;
                Some((rooted(rest), prefix))
            }
        }
    }
}

/// What is left of a path after a prefix came off, as a path again: with its leading `/`.
pub(super) fn rooted(rest: &str) -> String {
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

impl fmt::Display for ParsedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(host: &'a str, path: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            host,
            path,
            method: "GET",
            tls: false,
        }
    }

    #[test]
    fn tutorial_path_prefix_matches_everything() {
        let r = parse_v1("PathPrefix:/").unwrap();
        assert!(r.rule.matches(&facts("10.0.0.1", "/")));
        assert!(r.rule.matches(&facts("", "/deep/path")));
    }

    #[test]
    fn semicolon_is_and_comma_is_or() {
        let r = parse_v1("Host:a.example,B.example;PathPrefix:/api").unwrap();
        assert!(r.rule.matches(&facts("a.example", "/api/x")));
        assert!(r.rule.matches(&facts("b.EXAMPLE", "/api")));
        assert!(!r.rule.matches(&facts("c.example", "/api")));
        assert!(!r.rule.matches(&facts("a.example", "/other")));
    }

    #[test]
    fn path_is_exact() {
        let r = parse_v1("Path:/health").unwrap();
        assert!(r.rule.matches(&facts("x", "/health")));
        assert!(!r.rule.matches(&facts("x", "/health/deep")));
    }

    #[test]
    fn method_is_case_insensitive_in_the_rule() {
        let r = parse_v1("Method:post").unwrap();
        let post = RequestFacts {
            host: "",
            path: "/",
            method: "POST",
            tls: false,
        };
        assert!(r.rule.matches(&post));
        assert!(!r.rule.matches(&facts("", "/")));
    }

    #[test]
    fn strip_prefix_removes_longest_match() {
        let r = parse_v1("PathPrefixStrip:/api,/api/v2").unwrap();
        let apply = |path| r.rewrite.apply(path);
        assert_eq!(apply("/api/v2/users"), Some(("/users".into(), "/api/v2")));
        assert_eq!(apply("/api/users"), Some(("/users".into(), "/api")));
        assert_eq!(apply("/api"), Some(("/".into(), "/api")));
        assert_eq!(parse_v1("PathPrefix:/").unwrap().rewrite.apply("/x"), None);
    }

    #[test]
    fn v2_syntax_with_precedence_and_negation() {
        let r =
            parse_v2("Host(`a.example`, `b.example`) && PathPrefix(`/api`) || Path(\"/health\")")
                .unwrap();
        assert!(r.rule.matches(&facts("b.example", "/api/x")));
        assert!(r.rule.matches(&facts("z.example", "/health")));
        assert!(!r.rule.matches(&facts("z.example", "/api")));
        let r = parse_v2("PathPrefix(`/`) && !(Method(`POST`) || Host(`admin.example`))").unwrap();
        assert!(r.rule.matches(&facts("x", "/")));
        assert!(!r.rule.matches(&facts("admin.example", "/")));
    }

    #[test]
    fn v2_errors_point_at_the_problem() {
        assert!(matches!(
            parse_v2("Host(`a`"),
            Err(RuleError::Syntax { .. })
        ));
        assert!(matches!(parse_v2("Host(a)"), Err(RuleError::Syntax { .. })));
        assert!(matches!(
            parse_v2("Host(`a`) &&"),
            Err(RuleError::Syntax { .. })
        ));
        assert!(matches!(
            parse_v2("Host(`a`) Path(`/`)"),
            Err(RuleError::Syntax { .. })
        ));
        assert_eq!(
            parse_v2("HostRegexp(`.*`)"),
            Err(RuleError::UnknownMatcher("HostRegexp".into()))
        );
        assert_eq!(
            parse_v2("Host()"),
            Err(RuleError::NoArguments("Host".into()))
        );
        assert_eq!(
            parse_v2("PathPrefix(`api`)"),
            Err(RuleError::RelativePath("api".into()))
        );
    }

    #[test]
    fn bad_rules_name_the_culprit() {
        assert_eq!(parse_v1(""), Err(RuleError::Empty));
        assert_eq!(
            parse_v1("Hots:a"),
            Err(RuleError::UnknownMatcher("Hots".into()))
        );
        assert_eq!(
            parse_v1("PathPrefix"),
            Err(RuleError::Malformed("PathPrefix".into()))
        );
        assert_eq!(
            parse_v1("PathPrefix:api"),
            Err(RuleError::RelativePath("api".into()))
        );
        assert_eq!(
            parse_v1("Host:,"),
            Err(RuleError::EmptyValue("Host".into()))
        );
    }
}
