//! Which routers a request's host can match, so that a lookup tests a few rules rather
//! than every router in the table.
//!
//! A swarm behind limpet is mostly one `Host` rule per service, and routers are tried in
//! priority order, first match wins. With 1,000 such services, a request for a catch-all
//! `PathPrefix:/` router tested 1,000 host rules before its own, and limpet served a
//! third fewer requests than with the catch-all alone (bench/RESULTS.md). The index maps
//! each host that a router's rule requires to that router's position, and keeps apart the
//! routers whose rule matches whatever the host. A lookup walks the two ascending lists
//! merged, so it tries the same routers in the same order as a scan of all of them, minus
//! those that cannot match.

use std::collections::HashMap;
use std::sync::Arc;

use super::rule::Rule;
use super::Router;

/// Built with the table, from its routers in their final order.
#[derive(Debug, Default)]
pub struct RouterIndex {
    /// A host, lowercase, to the routers that require it. std's hasher is kept on purpose:
    /// the request chooses the key.
    by_host: HashMap<Arc<str>, Routers>,
    /// Routers whose rule does not pin the host, ascending.
    any_host: Box<[u32]>,
}

/// Router positions, ascending. Nearly every host has one router, and a table of thousands
/// is rebuilt for each edit, so one needs no allocation of its own.
#[derive(Debug)]
enum Routers {
    One(u32),
    Many(Vec<u32>),
}

impl Routers {
    fn as_slice(&self) -> &[u32] {
        match self {
            Routers::One(position) => std::slice::from_ref(position),
            Routers::Many(positions) => positions,
        }
    }

    fn push(&mut self, position: u32) {
        match self {
            // Positions come in ascending order; a rule naming a host twice gives one entry.
            Routers::One(p) if *p == position => {}
            Routers::One(p) => *self = Routers::Many(vec![*p, position]),
            Routers::Many(v) if v.last() == Some(&position) => {}
            Routers::Many(v) => v.push(position),
        }
    }
}

impl RouterIndex {
    pub fn new(routers: &[Router]) -> Self {
        let mut by_host: HashMap<Arc<str>, Routers> = HashMap::with_capacity(routers.len());
        let mut any_host = Vec::new();
        let mut hosts = Vec::new();
        for (position, router) in routers.iter().enumerate() {
            let position = u32::try_from(position).expect("fewer than 2^32 routers");
            hosts.clear();
            if !required_hosts(&router.def.rule.rule, &mut hosts) {
                any_host.push(position);
                continue;
            }
            for &host in &hosts {
                by_host
                    .entry(Arc::clone(host))
                    .and_modify(|found| found.push(position))
                    .or_insert(Routers::One(position));
            }
        }
        Self {
            by_host,
            any_host: any_host.into_boxed_slice(),
        }
    }

    /// Positions of the routers that may match a request for `host` (without its port, in
    /// any case), ascending.
    pub fn candidates(&self, host: &str) -> Candidates<'_> {
        Candidates {
            host: self.for_host(host),
            any: &self.any_host,
        }
    }

    fn for_host(&self, host: &str) -> &[u32] {
        if self.by_host.is_empty() {
            return &[];
        }
        let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            // On the stack: a DNS name has at most 253 bytes.
            let mut buf = [0u8; 256];
            match buf.get_mut(..host.len()) {
                Some(lower) => {
                    lower.copy_from_slice(host.as_bytes());
                    lower.make_ascii_lowercase();
                    // Lowercasing ASCII letters keeps UTF-8 valid.
                    std::str::from_utf8(lower)
                        .ok()
                        .and_then(|h| self.by_host.get(h))
                }
                None => self.by_host.get(&*host.to_ascii_lowercase()),
            }
        } else {
            self.by_host.get(host)
        };
        found.map_or(&[], Routers::as_slice)
    }
}

/// The routers for one host merged with those for any host, in table order.
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    host: &'a [u32],
    any: &'a [u32],
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        // A router is in one list or the other, never both.
        let list = match (self.host.first(), self.any.first()) {
            (Some(h), Some(a)) if h < a => &mut self.host,
            (Some(_), None) => &mut self.host,
            (_, Some(_)) => &mut self.any,
            (None, None) => return None,
        };
        let (&first, rest) = list.split_first()?;
        *list = rest;
        Some(first as usize)
    }
}

/// Pushes onto `out` hosts one of which the request must have for `rule` to match, and
/// returns true; returns false (leaving `out` unspecified) when the rule can match whatever
/// the host. A superset is allowed: the rule is still tested in full.
fn required_hosts<'r>(rule: &'r Rule, out: &mut Vec<&'r Arc<str>>) -> bool {
    match rule {
        Rule::Host(host) => {
            out.push(host);
            true
        }
        // Any branch may match: each must pin the host.
        Rule::Or(branches) => branches.iter().all(|b| required_hosts(b, out)),
        // Every branch must match: one that pins the host is enough.
        Rule::And(all) => all.iter().any(|r| {
            let mark = out.len();
            let pinned = required_hosts(r, out);
            if !pinned {
                out.truncate(mark);
            }
            pinned
        }),
        Rule::Not(_) | Rule::Path(_) | Rule::PathPrefix(_) | Rule::Method(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::rule::{parse_v1, parse_v2, RequestFacts};
    use crate::table::RouterDef;

    fn routers(rules: &[&str]) -> Vec<Router> {
        rules
            .iter()
            .enumerate()
            .map(|(i, text)| Router {
                def: Arc::new(RouterDef {
                    name: format!("r{i}").into(),
                    rule: if text.contains('(') {
                        parse_v2(text)
                    } else {
                        parse_v1(text)
                    }
                    .unwrap_or_else(|e| panic!("{text}: {e}")),
                    priority: 0,
                    tls: false,
                }),
                service: i,
            })
            .collect()
    }

    fn first_by_index(
        index: &RouterIndex,
        routers: &[Router],
        req: &RequestFacts,
    ) -> Option<usize> {
        index
            .candidates(req.host)
            .find(|&i| routers[i].def.rule.rule.matches(req))
    }

    fn first_by_scan(routers: &[Router], req: &RequestFacts) -> Option<usize> {
        routers.iter().position(|r| r.def.rule.rule.matches(req))
    }

    #[test]
    fn the_index_finds_the_router_a_full_scan_finds() {
        // Longer than the lookup's buffer on the stack.
        let long = "h".repeat(300);
        let long_rule = format!("Host:{long}");
        let routers = routers(&[
            &long_rule,
            "Host:a.example;PathPrefix:/api",
            "Host(`B.example`) || Host(`c.example`)",
            "PathPrefix:/static",
            "Host(`a.example`) && Method(`POST`)",
            "!Host(`a.example`) && PathPrefix(`/x`)",
            "Host(`c.example`) || PathPrefix(`/or`)",
            "Host:a.example,a.example",
            "(Host(`d.example`) || Host(`e.example`)) && (Host(`e.example`) || Path(`/p`))",
            "Method:GET",
            "PathPrefix:/",
        ]);
        let index = RouterIndex::new(&routers);
        let long_upper = long.to_ascii_uppercase();
        let hosts = [
            "a.example",
            "A.Example",
            "b.example",
            "c.example",
            "d.example",
            "E.EXAMPLE",
            "f.example",
            "",
            &long,
            &long_upper,
            "Ä.example",
        ];
        let paths = ["/", "/api/v1", "/static/x", "/x", "/or", "/p"];
        for host in hosts {
            for path in paths {
                for method in ["GET", "POST"] {
                    let req = RequestFacts {
                        host,
                        path,
                        method,
                        tls: false,
                    };
                    assert_eq!(
                        first_by_index(&index, &routers, &req),
                        first_by_scan(&routers, &req),
                        "{method} {host} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_request_for_an_unknown_host_tries_only_the_routers_for_any_host() {
        let mut rules: Vec<String> = (0..1000).map(|i| format!("Host:s{i}.example")).collect();
        rules.insert(500, "PathPrefix:/".into());
        rules.push("Host(`t.example`) && PathPrefix(`/api`)".into());
        rules.push("(Host(`u.example`) || Host(`v.example`)) && !Method(`GET`)".into());
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let routers = routers(&rules);
        let index = RouterIndex::new(&routers);
        assert_eq!(index.candidates("elsewhere").collect::<Vec<_>>(), [500]);
        assert_eq!(
            index.candidates("S999.example").collect::<Vec<_>>(),
            [500, 1000]
        );
        assert_eq!(index.candidates("s1.example").collect::<Vec<_>>(), [1, 500]);
        // A host required next to other matchers is indexed too.
        assert_eq!(
            index.candidates("t.example").collect::<Vec<_>>(),
            [500, 1001]
        );
        assert_eq!(
            index.candidates("v.example").collect::<Vec<_>>(),
            [500, 1002]
        );
    }
}
