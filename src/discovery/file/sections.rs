//! Splitting the file's text by service, so that a reload re-parses only the services whose
//! text changed.
//!
//! A file made of `[services.<name>...]`, `[tcp.<name>...]` and `[udp.<name>...]` tables is
//! the union of one independent subtree per name: each name's tables, parsed alone, give
//! what the whole file gives for that name. The split finds the table headers with TOML's
//! own lexer, so that a `[` inside a string or a multi-line array is never taken for one.
//! Whatever it does not recognise (keys before the first table, `[services]` on its own,
//! quoted or dotted names, arrays of tables) makes it give up, and the file is parsed whole.

use std::borrow::Cow;
use std::ops::Range;

use toml_parser::lexer::{Token, TokenKind};
use toml_parser::Source;

/// The top-level tables a service's text can be under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Services,
    Tcp,
    Udp,
}

/// One name's part of the file: the text of all its tables, in file order.
#[derive(Debug)]
pub(super) struct Part<'t> {
    pub name: &'t str,
    /// Where its spec comes in the whole file's list: under its first kind, by name.
    pub first_kind: Kind,
    pub text: Cow<'t, str>,
}

/// The file split by name, in the order parsing the whole file lists the specs; `None` when
/// the file has a form the split does not handle.
pub(super) fn split(text: &str) -> Option<Vec<Part<'_>>> {
    let headers = headers(text)?;
    // Each table runs from its header to the next one.
    let mut tables: Vec<(Kind, &str, Range<usize>)> = headers
        .iter()
        .enumerate()
        .map(|(i, (kind, name, start))| {
            let end = headers.get(i + 1).map_or(text.len(), |next| next.2);
            (*kind, *name, *start..end)
        })
        .collect();
    // Stable: a name's tables stay in file order, which TOML's meaning depends on.
    tables.sort_by_key(|(_, name, _)| *name);
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (kind, name, range) in tables {
        match parts.last_mut() {
            Some(part) if part.name == name => {
                part.first_kind = part.first_kind.min(kind);
                part.text.to_mut().push_str(&text[range]);
            }
            _ => parts.push(Part {
                name,
                first_kind: kind,
                text: Cow::Borrowed(&text[range]),
            }),
        }
    }
    parts.sort_by_key(|p| (p.first_kind, p.name));
    Some(parts)
}

/// Every table header's kind, service name and start, in file order.
fn headers(text: &str) -> Option<Vec<(Kind, &str, usize)>> {
    let source = Source::new(text);
    let mut tokens = source.lex();
    let mut headers = Vec::new();
    // Open brackets and braces of the value being read: a header is a `[` that starts a
    // line outside any value (a value's own `[` always follows an `=`).
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        let kind = token.kind();
        match kind {
            TokenKind::Eof => break,
            TokenKind::Newline => {
                line_start = true;
                continue;
            }
            TokenKind::Whitespace | TokenKind::Comment => continue,
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let start = token.span().start();
                let (kind, name) = header(text, &mut tokens)?;
                headers.push((kind, name, start));
            }
            // Anything else before the first header is a top-level key.
            _ if headers.is_empty() => return None,
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.checked_sub(1)?;
            }
            _ => {}
        }
        line_start = false;
    }
    Some(headers)
}

/// Reads a header after its `[`, up to and including its `]`: `kind.name` followed by
/// nothing or by a dotted sub-table (`[services.api.cookie]`).
fn header<'t>(text: &'t str, tokens: &mut impl Iterator<Item = Token>) -> Option<(Kind, &'t str)> {
    let mut keys = tokens.filter(|t| t.kind() != TokenKind::Whitespace);
    let kind = match bare_key(text, keys.next()?)? {
        "services" => Kind::Services,
        "tcp" => Kind::Tcp,
        "udp" => Kind::Udp,
        _ => return None,
    };
    if keys.next()?.kind() != TokenKind::Dot {
        return None;
    }
    let name = bare_key(text, keys.next()?)?;
    // The rest of the header, up to its `]`: further keys of the same service.
    for token in keys {
        match token.kind() {
            TokenKind::RightSquareBracket => return Some((kind, name)),
            TokenKind::Dot
            | TokenKind::Atom
            | TokenKind::BasicString
            | TokenKind::LiteralString => {}
            _ => return None,
        }
    }
    None
}

/// The text of a bare key (`A-Za-z0-9_-`); quoted keys are not handled.
fn bare_key(text: &str, token: Token) -> Option<&str> {
    let span = token.span();
    let key = &text[span.start()..span.end()];
    let bare = token.kind() == TokenKind::Atom
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    bare.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Option<Vec<(&str, Kind)>> {
        split(text).map(|parts| parts.iter().map(|p| (p.name, p.first_kind)).collect())
    }

    #[test]
    fn splits_by_name_in_the_order_the_whole_file_lists_them() {
        let text =
            "# a comment\n\n[udp.dns]\nfront_port = 53\n\n[services.web]\nrule = \"Host:a\"\n\
                    [tcp.redis]\nfront_port = 6379\n[services.api]\nrule = \"Host:b\"\n\
                    [services.web.cookie]\nsecure = true\n[ tcp . web ]\nfront_port = 443\n";
        assert_eq!(
            names(text).unwrap(),
            [
                ("api", Kind::Services),
                ("web", Kind::Services),
                ("redis", Kind::Tcp),
                ("dns", Kind::Udp),
            ]
        );
        let parts = split(text).unwrap();
        assert_eq!(
            parts[1].text,
            "[services.web]\nrule = \"Host:a\"\n[services.web.cookie]\nsecure = true\n\
             [ tcp . web ]\nfront_port = 443\n"
        );
    }

    #[test]
    fn brackets_in_values_and_strings_are_not_headers() {
        let text = "[services.a]\nrule = \"Host:a\"\nservers = [\n[1],\n  { url = \"x\" },\n]\n\
                    note = \"\"\"\n[services.b]\n\"\"\"\nother = '''\n[tcp.c]'''\n";
        assert_eq!(names(text).unwrap(), [("a", Kind::Services)]);
    }

    #[test]
    fn gives_up_on_forms_it_does_not_split() {
        for text in [
            "services.a.rule = \"Host:a\"\n[services.b]\n",
            "[services]\na.rule = \"Host:a\"\n",
            "[services.\"a.b\"]\nrule = \"Host:a\"\n",
            "[[services.a]]\nrule = \"Host:a\"\n",
            "[other.a]\n",
            "[services.a]\nx = ]\n",
        ] {
            assert!(split(text).is_none(), "{text}");
        }
    }
}
