//! Telling, without reading it, that the file has not changed since it was last read.
//!
//! A large file polled often costs a read and a comparison of all its bytes per poll. Its
//! metadata says as much for a fraction of that, with one catch: a timestamp only has the
//! file system's granularity (a timer tick, or more), so a second write of the same length
//! soon after a read can leave every field as it was. As git does for its index, a stamp is
//! trusted for good only for a file that had not been modified for a while when it was
//! read; until then the file is read again every [`RECHECK`] even when its stamp is the
//! same, so that such a second write waits at most that long.

use std::fs::Metadata;
use std::time::{Duration, Instant, SystemTime};

/// How long before a read the file must have been last modified for its stamp to be
/// trusted. Far above any file system's timestamp granularity (FAT's is 2 s).
const SETTLED: Duration = Duration::from_secs(3);

/// How often a file whose stamp is not settled is read though its stamp did not change.
const RECHECK: Duration = Duration::from_secs(1);

/// What the metadata said when the file was last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device, inode and status-change time: a file replaced by a rename or a symlink swap
    /// (how Docker configs and editors replace files) differs here even when its length and
    /// modification time were copied over.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            identity: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether a file read at `read_at` with this stamp can be taken as unchanged for as
    /// long as its stamp stays the same.
    fn settled(&self, read_at: SystemTime) -> bool {
        self.modified
            .and_then(|m| m.checked_add(SETTLED))
            .is_some_and(|m| m < read_at)
    }
}

/// The stamp taken with the last read of the file.
#[derive(Debug)]
pub(super) struct LastRead {
    stamp: Stamp,
    settled: bool,
    at: Instant,
}

impl LastRead {
    /// `stamp` was taken just before a read that started at `read_at`: should the file
    /// change in between, the next stamp differs and the file is read again.
    pub(super) fn new(stamp: Stamp, read_at: SystemTime) -> Self {
        Self {
            settled: stamp.settled(read_at),
            stamp,
            at: Instant::now(),
        }
    }

    /// The stamp that, found unchanged, spares reading the file: always for a settled file,
    /// for a recent one only until [`RECHECK`] has passed.
    pub(super) fn vouching(&self) -> Option<&Stamp> {
        (self.settled || self.at.elapsed() < RECHECK).then_some(&self.stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A directory of the test's own, removed when it is dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("limpet-stamp-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_rewrite_of_the_same_length_changes_the_stamp_or_is_not_settled() {
        let dir = Scratch::new("rewrite");
        let path = dir.0.join("limpet.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let first = Stamp::of(&std::fs::metadata(&path).unwrap());
        let read_at = SystemTime::now();
        // Written within the same timestamp tick, most likely: only `settled` guards this.
        std::fs::write(&path, "a = 2\n").unwrap();
        let second = Stamp::of(&std::fs::metadata(&path).unwrap());
        assert!(first != second || !first.settled(read_at));
        // A file last modified long before it was read is settled.
        assert!(second.settled(read_at + SETTLED + Duration::from_millis(1)));
        assert!(!second.settled(read_at));
    }

    #[test]
    fn a_file_renamed_over_it_changes_the_stamp() {
        let dir = Scratch::new("rename");
        let (path, tmp) = (dir.0.join("limpet.toml"), dir.0.join("new.toml"));
        std::fs::write(&path, "a = 1\n").unwrap();
        let before = Stamp::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&tmp, "a = 2\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(before, Stamp::of(&std::fs::metadata(&path).unwrap()));
    }
}
