//! Fuzzes the file provider's incremental reload: successive versions of a file, each
//! re-read by one [`Reloader`] that keeps what it can from the version before.
//!
//! Input: versions of the file separated by NUL bytes, read as lossy UTF-8. Besides "never
//! panics", it checks that after every version the reloader gives what a reloader that
//! never saw the earlier versions gives: the same specs in the same order, or the same
//! error. The edits between versions are where the reloader's shortcuts (headers carried
//! over, services kept without a text comparison) could go wrong, and a fresh reloader takes
//! none of them.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use limpet::discovery::file::Reloader;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("limpet.toml");
    let mut reloader = Reloader::default();
    for version in data.split(|&b| b == 0).take(8) {
        let text = String::from_utf8_lossy(version);
        let kept = reloader.parse(path, &text);
        let fresh = Reloader::default().parse(path, &text);
        match (kept, fresh) {
            (Ok(kept), Ok(fresh)) => {
                let kept: Vec<_> = kept.iter().map(|s| &**s).collect();
                let fresh: Vec<_> = fresh.iter().map(|s| &**s).collect();
                assert_eq!(kept, fresh, "after an edit into {text:?}");
            }
            (Err(kept), Err(fresh)) => assert_eq!(kept.to_string(), fresh.to_string()),
            (kept, fresh) => panic!("reloader {kept:?}, fresh {fresh:?}, for {text:?}"),
        }
    }
});
