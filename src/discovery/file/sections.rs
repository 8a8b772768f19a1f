//! Splitting the file's text by service, so that a reload re-parses only the services whose
//! text changed.
//!
//! A file made of `[services.<name>...]`, `[tcp.<name>...]` and `[udp.<name>...]` tables is
//! the union of one independent subtree per name: each name's tables, parsed alone, give
//! what the whole file gives for that name. The split finds the table headers with TOML's
//! own lexer, so that a `[` inside a string or a multi-line array is never taken for one.
//! Whatever it does not recognise (keys before the first table, `[services]` on its own,
//! quoted or dotted names, arrays of tables) makes it give up, and the file is parsed whole.
//!
//! Lexing is most of what a reload of a large file costs, so [`Scan`] keeps the last text's
//! headers and lexes a new version only from the last header before its first changed byte
//! to the first header inside its unchanged end.

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
    /// Whether the text may differ from the same name's text in the last text split. When
    /// false it is the same: all of the name's tables, in both texts, lie where the two
    /// texts agree, so the caller need not compare them.
    pub changed: bool,
}

/// A table header, by byte offsets into its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    kind: Kind,
    name: Range<usize>,
    /// Where its `[` is: a place where the lexer is outside any value, at a line's start.
    start: usize,
}

impl Header {
    fn shifted(&self, by: isize) -> Self {
        let at = |i: usize| i.wrapping_add_signed(by);
        Self {
            kind: self.kind,
            name: at(self.name.start)..at(self.name.end),
            start: at(self.start),
        }
    }
}

/// Which tables a split did not carry over whole from the last text: the new text's tables
/// at `new` (by header) were found by lexing or end where the lexing found the next header,
/// and the last text's at `old` were dropped. Every other table has the same text in both.
struct Relexed {
    new: Range<usize>,
    old: Range<usize>,
}

impl Relexed {
    /// Nothing carried over: `new` headers found, `old` dropped.
    fn all(new: usize, old: usize) -> Self {
        Self {
            new: 0..new,
            old: 0..old,
        }
    }
}

/// The last text split, its headers, and which of them made each part.
#[derive(Debug, Default)]
pub(super) struct Scan {
    text: String,
    headers: Vec<Header>,
    plan: Plan,
    /// The last split kept the plan of the one before it.
    plan_kept: bool,
}

/// Which headers' tables make each part, part after part in the order the split gives them.
/// Working it out sorts the headers by name and then the parts: an edit that leaves every
/// header's kind and name where they were, as nearly every edit does, reuses it.
#[derive(Debug, Default)]
struct Plan {
    /// Header positions, each part's in file order.
    tables: Vec<usize>,
    /// Where each part's run in `tables` ends.
    ends: Vec<usize>,
}

impl Scan {
    /// `text` split by name, in the order parsing the whole file lists the specs; `None` when
    /// the file has a form the split does not handle.
    pub(super) fn split<'t>(&mut self, text: &'t str) -> Option<Vec<Part<'t>>> {
        let Some((headers, relexed)) = self.headers_after_edit(text) else {
            *self = Self::default();
            return None;
        };
        self.plan_kept = self.same_layout(text, &headers, &relexed);
        if !self.plan_kept {
            self.plan = Plan::new(text, &headers);
        }
        let mut parts = self.plan.parts(text, &headers, &relexed.new);
        self.mark_dropped(&mut parts, &relexed.old);
        self.text.clear();
        self.text.push_str(text);
        self.headers = headers;
        Some(parts)
    }

    /// Whether the last split gave the same names, in the same order, as the split before
    /// it: then a name's part is where it was.
    pub(super) fn parts_as_before(&self) -> bool {
        self.plan_kept
    }

    /// Whether `headers` of `text` have the kinds and names the last text's had, position
    /// for position. Only the relexed ones can differ: the others were carried over.
    fn same_layout(&self, text: &str, headers: &[Header], relexed: &Relexed) -> bool {
        headers.len() == self.headers.len()
            && relexed.new == relexed.old
            && relexed.new.clone().all(|i| {
                let (new, old) = (&headers[i], &self.headers[i]);
                new.kind == old.kind && text[new.name.clone()] == self.text[old.name.clone()]
            })
    }

    /// Marks as changed the parts named by the last text's headers at `dropped`: a name can
    /// lose a table to an edit without any of its tables in the new text being relexed.
    fn mark_dropped(&self, parts: &mut [Part<'_>], dropped: &Range<usize>) {
        for h in &self.headers[dropped.clone()] {
            let name = &self.text[h.name.clone()];
            // Parts are in (kind, name) order, and a name's part is under one of the kinds.
            for kind in [Kind::Services, Kind::Tcp, Kind::Udp] {
                if let Ok(i) = parts.binary_search_by(|p| (p.first_kind, p.name).cmp(&(kind, name)))
                {
                    parts[i].changed = true;
                }
            }
        }
    }

    /// `text`'s headers, found from the last text's. Where the two texts agree up to a
    /// header, the lexer was in the same state there in both, so the headers before it stand;
    /// where they agree from a header to the end, the headers after it stand, moved by the
    /// difference in length.
    fn headers_after_edit(&self, text: &str) -> Option<(Vec<Header>, Relexed)> {
        let (old, new) = (self.text.as_bytes(), text.as_bytes());
        let prefix = common_prefix(old, new);
        let suffix = common_suffix(old, new);
        let kept = self.headers.partition_point(|h| h.start <= prefix);
        let Some(restart) = kept.checked_sub(1).map(|i| self.headers[i].start) else {
            // Nothing to carry over (or no last text): every table is new.
            let found = headers(text)?;
            let relexed = Relexed::all(found.len(), self.headers.len());
            return Some((found, relexed));
        };
        let mut found = self.headers[..kept - 1].to_vec();
        let tail = new.len() - suffix;
        let shift = new.len() as isize - old.len() as isize;
        // Where the carried-over end begins, in the last text's headers.
        let mut carried_from = self.headers.len();
        let known_from = |at: usize| {
            if at < tail {
                return None;
            }
            let old_at = at.wrapping_add_signed(-shift);
            let i = self
                .headers
                .binary_search_by_key(&old_at, |h| h.start)
                .ok()?;
            carried_from = i;
            Some(self.headers[i..].iter().map(|h| h.shifted(shift)))
        };
        scan(text, restart, &mut found, known_from)?;
        let relexed = if carried_from < kept - 1 {
            // The carried-over end begins before the carried-over start ends: the texts'
            // common start and end overlap (repeated text), and some of the last text's
            // tables stand for two of this one's. Nothing is known unchanged.
            Relexed::all(found.len(), self.headers.len())
        } else {
            // The table before the first relexed header ends where the lexing found the
            // next header, which may not be where it was: it counts as relexed too.
            let first = kept.saturating_sub(2);
            Relexed {
                new: first..found.len() - (self.headers.len() - carried_from),
                old: first..carried_from,
            }
        };
        Some((found, relexed))
    }
}

/// How many leading bytes `a` and `b` share.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    common_run(a, b, |i, len| i..i + len)
}

/// How many trailing bytes `a` and `b` share.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    common_run(&a[a.len() - n..], &b[b.len() - n..], |i, len| {
        n - i - len..n - i
    })
}

/// How many bytes `a` and `b` share from one end, `at(i, len)` being the range `len` bytes
/// long that lies `i` bytes in from it. Compared a block at a time, as `memcmp` does it far
/// faster than a byte loop over a file of hundreds of kilobytes.
fn common_run(a: &[u8], b: &[u8], at: impl Fn(usize, usize) -> Range<usize>) -> usize {
    const BLOCK: usize = 256;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[at(i, BLOCK)] == b[at(i, BLOCK)] {
        i += BLOCK;
    }
    while i < n && a[at(i, 1)] == b[at(i, 1)] {
        i += 1;
    }
    i
}

impl Plan {
    /// Groups the headers by name (a name's tables stay in file order, which TOML's meaning
    /// depends on) and orders the groups by first kind, then name: the order in which
    /// parsing the whole file lists the specs.
    fn new(text: &str, headers: &[Header]) -> Self {
        let name = |i: usize| &text[headers[i].name.clone()];
        let mut by_name: Vec<usize> = (0..headers.len()).collect();
        by_name.sort_by_key(|&i| name(i));
        // (first kind, name, range in `by_name`) of each group.
        let mut groups: Vec<(Kind, &str, Range<usize>)> = Vec::new();
        for (at, &i) in by_name.iter().enumerate() {
            match groups.last_mut() {
                Some((kind, n, range)) if *n == name(i) => {
                    *kind = (*kind).min(headers[i].kind);
                    range.end = at + 1;
                }
                _ => groups.push((headers[i].kind, name(i), at..at + 1)),
            }
        }
        groups.sort_by_key(|&(kind, name, _)| (kind, name));
        let mut plan = Self {
            tables: Vec::with_capacity(headers.len()),
            ends: Vec::with_capacity(groups.len()),
        };
        for (.., range) in groups {
            plan.tables.extend_from_slice(&by_name[range]);
            plan.ends.push(plan.tables.len());
        }
        plan
    }

    /// The file split at `headers` by this plan; a part is changed when one of its tables'
    /// headers is among those at `relexed`.
    fn parts<'t>(
        &self,
        text: &'t str,
        headers: &[Header],
        relexed: &Range<usize>,
    ) -> Vec<Part<'t>> {
        // Each table runs from its header to the next one.
        let table = |i: usize| {
            let end = headers.get(i + 1).map_or(text.len(), |next| next.start);
            &text[headers[i].start..end]
        };
        let mut parts = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            let (&first, rest) = self.tables[start..end]
                .split_first()
                .expect("a part has a table");
            start = end;
            let mut part = Part {
                name: &text[headers[first].name.clone()],
                first_kind: headers[first].kind,
                text: Cow::Borrowed(table(first)),
                changed: relexed.contains(&first),
            };
            for &i in rest {
                part.first_kind = part.first_kind.min(headers[i].kind);
                part.text.to_mut().push_str(table(i));
                part.changed |= relexed.contains(&i);
            }
            parts.push(part);
        }
        parts
    }
}

/// Every table header of `text`, in file order.
fn headers(text: &str) -> Option<Vec<Header>> {
    let mut found = Vec::new();
    scan(text, 0, &mut found, |_| None::<std::iter::Empty<Header>>)?;
    Some(found)
}

/// Lexes `text` from `from` (its start, or a header's), adding the headers it finds to
/// `found`. For a header at `at`, `known_from(at)` may give the headers from there to the
/// end, which ends the lexing.
fn scan<I>(
    text: &str,
    from: usize,
    found: &mut Vec<Header>,
    mut known_from: impl FnMut(usize) -> Option<I>,
) -> Option<()>
where
    I: Iterator<Item = Header>,
{
    let rest = &text[from..];
    let source = Source::new(rest);
    let mut tokens = source.lex();
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
                let start = from + token.span().start();
                if let Some(known) = known_from(start) {
                    found.extend(known);
                    return Some(());
                }
                let (kind, name) = header(rest, &mut tokens)?;
                found.push(Header {
                    kind,
                    name: from + name.start..from + name.end,
                    start,
                });
            }
            // Anything else before the first header is a top-level key.
            _ if found.is_empty() => return None,
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.checked_sub(1)?;
            }
            _ => {}
        }
        line_start = false;
    }
    Some(())
}

/// Reads a header after its `[`, up to and including its `]`: `kind.name` followed by
/// nothing or by a dotted sub-table (`[services.api.cookie]`). The name is given by where
/// it is in `text`.
fn header(text: &str, tokens: &mut impl Iterator<Item = Token>) -> Option<(Kind, Range<usize>)> {
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
    let name = keys.next()?;
    bare_key(text, name)?;
    // The rest of the header, up to its `]`: further keys of the same service.
    for token in keys {
        match token.kind() {
            TokenKind::RightSquareBracket => {
                return Some((kind, name.span().start()..name.span().end()))
            }
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

    fn split(text: &str) -> Option<Vec<Part<'_>>> {
        Scan::default().split(text)
    }

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

    fn described(parts: Option<Vec<Part<'_>>>) -> Option<Vec<(String, Kind, String)>> {
        parts.map(|parts| {
            parts
                .iter()
                .map(|p| (p.name.to_owned(), p.first_kind, p.text.to_string()))
                .collect()
        })
    }

    /// Edits anywhere, of the kinds that move headers in and out of values: every rescan
    /// must find what lexing the edited text from its start finds, and a part it calls
    /// unchanged must have the text that the same name had before the edit.
    #[test]
    fn a_rescan_finds_what_a_full_scan_finds() {
        let base = "[services.a]\nrule = \"Host:a\"\nservers = [\n  { url = \"x\" },\n]\n\
                    [services.b]\nrule = \"Host:b\"\n[tcp.b]\nfront_port = 1\n\
                    [services.a.cookie]\nsecure = true\n[udp.c]\nfront_port = 2\n\
                    [services.d]\nnote = \"\"\"\n[x]\n\"\"\"\n";
        let inserts = [
            "[services.e]\n",
            "\"",
            "\"\"\"",
            "[",
            "]",
            "\n",
            "x = 1\n",
            "'''",
            "{",
            "#",
            "[udp.f]\n",
        ];
        let mut rng = fastrand::Rng::with_seed(6);
        let (mut edits, mut splittable, mut unchanged) = (0, 0, 0);
        for _ in 0..3000 {
            let mut scan = Scan::default();
            let mut text = base.to_owned();
            let mut last = described(scan.split(&text));
            for _ in 0..4 {
                let before = text.clone();
                let at = rng.usize(..=text.len());
                let end = (at + rng.usize(1..12)).min(text.len());
                match rng.u8(..4) {
                    0 => text.insert_str(at, inserts[rng.usize(..inserts.len())]),
                    1 => text.replace_range(at..end, ""),
                    // A stretch of the text repeated in place, headers and all: the texts'
                    // common start and common end then overlap.
                    2 => {
                        let to = (at + rng.usize(..80)).min(text.len());
                        let copy = text[at..to].to_owned();
                        text.insert_str(to, &copy);
                    }
                    _ => {
                        let bytes = b"[]\"'{}#\n=.abtcpu";
                        let by = bytes[rng.usize(..bytes.len())];
                        text.replace_range(
                            at..(at + 1).min(text.len()),
                            &char::from(by).to_string(),
                        );
                    }
                }
                let full = described(Scan::default().split(&text));
                let parts = scan.split(&text);
                for part in parts.iter().flatten().filter(|p| !p.changed) {
                    let had = last.iter().flatten().find(|(name, ..)| name == part.name);
                    assert_eq!(
                        had.map(|(_, _, text)| text.as_str()),
                        Some(&*part.text),
                        "{} called unchanged after editing {before:?} into {text:?}",
                        part.name
                    );
                    unchanged += 1;
                }
                let rescanned = described(parts);
                assert_eq!(rescanned, full, "after editing {before:?} into {text:?}");
                last = rescanned;
                edits += usize::from(before != text);
                splittable += usize::from(full.is_some());
            }
        }
        // The edits are the point: most must change the text and many keep it splittable,
        // and most of those leave some names untouched.
        assert!(
            edits > 10_000 && splittable > 3_000 && unchanged > 3_000,
            "{edits} {splittable} {unchanged}"
        );
    }

    #[test]
    fn an_edit_that_moves_a_name_under_another_kind_reorders_the_parts() {
        let before = "[services.a]\nx = 1\n[services.b]\nx = 2\n[services.c]\nx = 3\n";
        let after = before.replace("[services.b]", "[udp.b]");
        let mut scan = Scan::default();
        scan.split(before).unwrap();
        let rescanned = described(scan.split(&after));
        assert_eq!(rescanned, described(split(&after)));
        let order: Vec<String> = rescanned.unwrap().into_iter().map(|p| p.0).collect();
        assert_eq!(order, ["a", "c", "b"]);
    }

    /// A file pasted after itself: its old text is both the new one's start and its end,
    /// so the headers carried over from each overlap.
    #[test]
    fn a_text_repeated_after_itself_is_all_changed() {
        let text = "[services.a]\n[services.b]\n[services.c]\n";
        let mut scan = Scan::default();
        scan.split(text).unwrap();
        let doubled = text.repeat(2);
        let parts = scan.split(&doubled).unwrap();
        assert!(parts.iter().all(|p| p.changed));
        assert_eq!(
            described(Some(parts)),
            described(Scan::default().split(&doubled))
        );
    }

    #[test]
    fn a_rescan_lexes_only_between_the_headers_around_the_edit() {
        let file: String = (0..100)
            .map(|i| format!("[services.s{i}]\nrule = \"Host:s{i}\"\n"))
            .collect();
        let edited = file.replace("Host:s50\"", "Host:s50-edited\"");
        let mut scan = Scan::default();
        scan.split(&file).unwrap();
        // Unlexable text in both ends of the remembered file, of the same length as what it
        // replaces: found only if the rescan lexed there.
        let spoil = |text: &str| {
            let n = text.len();
            format!(
                "{}{}{}",
                "]\"".repeat(8),
                &text[16..n - 16],
                "]\"".repeat(8)
            )
        };
        scan.text = spoil(&file);
        assert!(headers(&scan.text).is_none());
        let (found, _) = scan.headers_after_edit(&spoil(&edited)).unwrap();
        assert_eq!(found, headers(&edited).unwrap());
    }
}
