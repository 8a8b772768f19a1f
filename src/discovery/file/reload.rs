//! Re-reading the file after an edit at a cost in proportion to the edit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{parse, sections, FileError};
use crate::table::spec::ServiceSpec;

/// Parses successive versions of the file. A service whose text did not change is handed on
/// as the same `Arc` as last time, which the publisher and the table builder then pass over
/// at the cost of a pointer comparison; only the services whose text changed are parsed.
#[derive(Debug, Default)]
pub struct Reloader {
    /// Each service of the last good version, in the order its split gave them.
    known: Vec<Known>,
    /// The last version's table headers, so that the next version is lexed only where it
    /// changed.
    scan: sections::Scan,
}

#[derive(Debug)]
struct Known {
    name: String,
    text: String,
    spec: Arc<ServiceSpec>,
}

/// What a part of the new version gives: the service known from the last, by its place in
/// `known`, or a new entry.
enum Next {
    Kept(usize),
    Parsed(Known),
}

impl Reloader {
    /// The file's services, as [`parse`] gives them. An error is always the one parsing the
    /// whole file gives, so that it names the right line; the last good version stays known.
    pub fn parse(&mut self, path: &Path, text: &str) -> Result<Vec<Arc<ServiceSpec>>, FileError> {
        if let Some(specs) = self.parse_changed(path, text) {
            return Ok(specs);
        }
        // The next split must compare with the last text that `known` describes, not this one.
        self.scan = sections::Scan::default();
        let specs = parse(path, text)?;
        // A file the split does not handle: nothing to compare the next version with.
        self.known.clear();
        Ok(specs.into_iter().map(Arc::new).collect())
    }

    /// Parses the services whose text changed and keeps the others; `None` when the file
    /// cannot be split by service or a changed service does not parse on its own.
    fn parse_changed(&mut self, path: &Path, text: &str) -> Option<Vec<Arc<ServiceSpec>>> {
        let parts = self.scan.split(text)?;
        // A split that gave the names it gave last time puts each where `known` has it:
        // looking a thousand names up by hash was a tenth of what an edit cost.
        let by_name: Option<HashMap<&str, usize>> =
            (!self.scan.parts_as_before() || self.known.len() != parts.len()).then(|| {
                self.known
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k.name.as_str(), i))
                    .collect()
            });
        // Everything is parsed before anything known is replaced: a bad edit changes nothing.
        let mut next: Vec<Next> = Vec::with_capacity(parts.len());
        for (at, part) in parts.iter().enumerate() {
            crate::table::pace::breathe();
            let known = match &by_name {
                Some(by_name) => by_name.get(part.name).copied(),
                None => Some(at),
            };
            debug_assert!(known.is_none_or(|i| self.known[i].name == part.name));
            let kept = known.filter(|&i| !part.changed || self.known[i].text == *part.text);
            next.push(if let Some(i) = kept {
                Next::Kept(i)
            } else {
                let parsed = parse(path, &part.text);
                crate::table::pace::breathe_now();
                let mut specs = parsed.ok()?;
                let spec = specs
                    .pop()
                    .filter(|s| specs.is_empty() && s.name == part.name)?;
                Next::Parsed(Known {
                    name: part.name.to_owned(),
                    text: part.text.clone().into_owned(),
                    spec: Arc::new(spec),
                })
            });
        }
        // Names are unique, each one part: a known service is kept at most once, and those
        // the file no longer has are dropped with `last`.
        let mut last: Vec<Option<Known>> = std::mem::take(&mut self.known)
            .into_iter()
            .map(Some)
            .collect();
        let mut specs = Vec::with_capacity(parts.len());
        for next in next {
            let known = match next {
                Next::Kept(i) => last[i].take().expect("each known service is kept once"),
                Next::Parsed(known) => known,
            };
            specs.push(Arc::clone(&known.spec));
            self.known.push(known);
        }
        Some(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "limpet.toml";

    fn file(api_rule: &str) -> String {
        format!(
            "[services.api]\nrule = \"{api_rule}\"\nservers = [{{ url = \"http://127.0.0.1:8001\" }}]\n\
             [services.web]\nrule = \"PathPrefix:/\"\nsticky = true\n\
             servers = [{{ url = \"http://127.0.0.1:8002\" }}]\n\
             [services.web.cookie]\nsecure = true\n\
             [tcp.web]\nfront_port = 8443\nservers = [{{ address = \"127.0.0.1:8443\" }}]\n\
             [udp.dns]\nfront_port = 53\nservers = [{{ address = \"127.0.0.1:5353\" }}]\n"
        )
    }

    fn whole(text: &str) -> Vec<ServiceSpec> {
        parse(Path::new(PATH), text).unwrap()
    }

    fn specs(r: &mut Reloader, text: &str) -> Vec<Arc<ServiceSpec>> {
        r.parse(Path::new(PATH), text).unwrap()
    }

    fn plain(specs: &[Arc<ServiceSpec>]) -> Vec<ServiceSpec> {
        specs.iter().map(|s| (**s).clone()).collect()
    }

    #[test]
    fn gives_what_the_whole_file_gives_and_reuses_unchanged_services() {
        let mut r = Reloader::default();
        let first = specs(&mut r, &file("Host:a"));
        assert_eq!(plain(&first), whole(&file("Host:a")));
        let second = specs(&mut r, &file("Host:b"));
        assert_eq!(plain(&second), whole(&file("Host:b")));
        let names: Vec<&str> = second.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web", "dns"]);
        assert!(!Arc::ptr_eq(&first[0], &second[0]), "api changed");
        assert!(Arc::ptr_eq(&first[1], &second[1]) && Arc::ptr_eq(&first[2], &second[2]));
    }

    #[test]
    fn a_rename_that_moves_a_service_in_the_order_leaves_the_others_their_specs() {
        let mut r = Reloader::default();
        let before = "[services.a]\nrule = \"Host:a\"\n[services.b]\nrule = \"Host:b\"\n\
                      [services.c]\nrule = \"Host:c\"\n";
        let first = specs(&mut r, before);
        let after = before.replace("[services.a]", "[services.z]");
        let second = specs(&mut r, &after);
        assert_eq!(plain(&second), whole(&after));
        let names: Vec<&str> = second.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "z"]);
        assert!(Arc::ptr_eq(&first[1], &second[0]) && Arc::ptr_eq(&first[2], &second[1]));
    }

    #[test]
    fn a_bad_edit_reports_the_whole_files_error_and_forgets_nothing() {
        let mut r = Reloader::default();
        let good = specs(&mut r, &file("Host:a"));
        let bad = file("Hots:a");
        let e = r.parse(Path::new(PATH), &bad).unwrap_err().to_string();
        assert_eq!(e, parse(Path::new(PATH), &bad).unwrap_err().to_string());
        let again = specs(&mut r, &file("Host:c"));
        assert!(Arc::ptr_eq(&good[1], &again[1]));
    }

    /// The edit after a bad one is compared with the last good version, not the bad one:
    /// `web` changed in the bad edit and must not pass for unchanged when only `api` is
    /// mended.
    #[test]
    fn after_a_bad_edit_services_changed_in_it_are_reparsed() {
        let mut r = Reloader::default();
        specs(&mut r, &file("Host:a"));
        let bad = file("Hots:a").replace("secure = true", "secure = false");
        assert!(r.parse(Path::new(PATH), &bad).is_err());
        let mended = bad.replace("Hots:a", "Host:a");
        assert_eq!(plain(&specs(&mut r, &mended)), whole(&mended));
    }

    /// Line edits of every kind a person makes, good and bad, one after another: after each,
    /// the reloader gives what parsing the whole file gives, the same specs or the same error.
    #[test]
    fn after_any_run_of_edits_it_agrees_with_parsing_the_whole_file() {
        let lines = [
            "[services.api]",
            "[services.web]",
            "[services.web.cookie]",
            "[services.new]",
            "[tcp.web]",
            "[udp.dns]",
            "rule = \"Host:a\"",
            "rule = \"Host:b;PathPrefix:/x\"",
            "rule = \"Hots:a\"",
            "sticky = true",
            "secure = false",
            "front_port = 9000",
            "servers = [{ url = \"http://127.0.0.1:8003\" }]",
            "servers = [{ address = \"127.0.0.1:9000\" }]",
            "weight = ",
            "note = \"\"\"",
            "\"\"\"",
            "",
        ];
        let mut rng = fastrand::Rng::with_seed(10);
        let (mut agreed_ok, mut agreed_err) = (0, 0);
        for _ in 0..300 {
            let mut r = Reloader::default();
            let mut text: Vec<String> = file("Host:a").lines().map(str::to_owned).collect();
            let mut last_good = text.clone();
            for _ in 0..12 {
                let at = rng.usize(..=text.len());
                match rng.u8(..4) {
                    0 => text.insert(at, lines[rng.usize(..lines.len())].to_owned()),
                    1 if at < text.len() => drop(text.remove(at)),
                    // A stretch repeated in place, as a paste does.
                    2 => {
                        let to = (at + rng.usize(..6)).min(text.len());
                        let copy = text[at..to].to_vec();
                        text.splice(to..to, copy);
                    }
                    _ if at < text.len() => text[at] = lines[rng.usize(..lines.len())].to_owned(),
                    _ => {}
                }
                let joined = text.join("\n") + "\n";
                let path = Path::new(PATH);
                match (parse(path, &joined), r.parse(path, &joined)) {
                    (Ok(whole), Ok(got)) => {
                        assert_eq!(plain(&got), whole, "{joined}");
                        agreed_ok += 1;
                        last_good = text.clone();
                    }
                    (Err(whole), Err(got)) => {
                        assert_eq!(got.to_string(), whole.to_string(), "{joined}");
                        agreed_err += 1;
                        // Mended half the time, as a person does, so that good versions
                        // follow bad ones.
                        if rng.bool() {
                            text = last_good.clone();
                        }
                    }
                    (whole, got) => panic!("whole file {whole:?}, reloader {got:?}: {joined}"),
                }
            }
        }
        // Both kinds of outcome must be common, or the edits test little.
        assert!(
            agreed_ok > 300 && agreed_err > 300,
            "{agreed_ok} {agreed_err}"
        );
    }

    #[test]
    fn services_that_leave_are_forgotten() {
        let mut r = Reloader::default();
        specs(&mut r, &file("Host:a"));
        let text = "[services.api]\nrule = \"Host:a\"\n";
        assert_eq!(plain(&specs(&mut r, text)), whole(text));
        assert_eq!(r.known.len(), 1);
    }

    #[test]
    fn a_file_it_cannot_split_is_parsed_whole() {
        let mut r = Reloader::default();
        let text = "[services]\napi.rule = \"Host:a\"\n";
        assert_eq!(plain(&specs(&mut r, text)), whole(text));
        assert!(r.known.is_empty());
    }
}
