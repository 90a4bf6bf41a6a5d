//! `dns.extra_records_path`: the file is read once at start and then polled, and each new
//! valid version reaches every connected client as a new `DNSConfig` through the map hub.
//!
//! At start a missing, unreadable or invalid file stops the server, as headscale does (its
//! `NewExtraRecordsManager` error is fatal); an empty file means no records. At runtime a
//! bad version is reported once and the previous records stay, so a half-written or broken
//! file never empties everyone's DNS; an empty file is taken for a writer caught between
//! truncating and writing, and waited out (headscale ignores it too). Write `[]` to remove
//! every record.
//!
//! Why polling rather than inotify: editors, `mv`-into-place scripts and Kubernetes
//! ConfigMaps (a symlink swapped to a new directory) all replace the file instead of writing
//! it, and an inotify watch on the file is lost at the first replacement (headscale re-adds it
//! with a backoff); watching the directory misses the symlink swap. One `stat` per second
//! sees every one of these, needs no extra dependency and costs nothing measurable; the
//! content is read only when the stat changes and hashed, so an identical rewrite sends
//! nothing.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::extra_records::{self, ExtraRecordsError, MAX_FILE_BYTES};
use crate::config::{Config, ExtraRecord};
use crate::control::hub::MapHub;
use crate::control::netmap_context::dns_config_with;
use crate::tailcfg::SharedJson;

/// How often the file is looked at; a change reaches clients within this plus one batch.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A file modified this recently is read again on the next poll even if its stamp looks
/// unchanged: a second write inside the filesystem's timestamp granularity could leave the
/// same size and times (git's "racily clean" problem).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Why the file could not be used at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("dns.extra_records_path: cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("dns.extra_records_path: {path} is a directory, not a file")]
    Directory { path: String },
    #[error("dns.extra_records_path: {path} {error}")]
    Invalid {
        path: String,
        error: ExtraRecordsError,
    },
}

/// What identifies one version of the file without reading it. The inode and ctime change
/// when the file is replaced by a rename, even with the same size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: (i64, i64),
    pub changed: (i64, i64),
    pub inode: u64,
    pub device: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }

    /// The mtime as seconds since the epoch (negative before it).
    fn modified_seconds(&self) -> f64 {
        self.modified.0 as f64 + self.modified.1 as f64 / 1e9
    }
}

/// What one look at the file led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new to serve.
    Unchanged,
    /// An empty file: a writer is probably half way; the previous records stay.
    Waiting,
    /// A version that cannot be served, and why (reported once per version).
    Refused(String),
    /// The previous problem is gone but the records are the same as before.
    Recovered,
    /// New records to serve.
    Changed(Vec<ExtraRecord>),
}

/// The watched file's state: what is served and what was last looked at. The decisions
/// (`needs_read`, `take`, `unreadable`) are pure; `poll` does the I/O around them.
#[derive(Debug)]
pub struct RecordsFile {
    path: PathBuf,
    records: Vec<ExtraRecord>,
    seen: Option<Stamp>,
    recheck: bool,
    /// SHA-256 of the last bytes looked at: an identical rewrite does nothing, and a bad
    /// version is reported once.
    last_bytes: Option<[u8; 32]>,
    /// The problem last reported, if it still stands.
    problem: Option<String>,
}

impl RecordsFile {
    /// Reads the file at start. Missing, unreadable, a directory, or invalid: an error (the
    /// server does not start). Empty: no records.
    pub fn open(path: &Path) -> Result<RecordsFile, LoadError> {
        let shown = path.display().to_string();
        let (stamp, bytes) = read(path).map_err(|error| match error {
            ReadError::Directory => LoadError::Directory {
                path: shown.clone(),
            },
            ReadError::TooLarge(size) => LoadError::Invalid {
                path: shown.clone(),
                error: ExtraRecordsError::TooLarge { size },
            },
            ReadError::Io(source) => LoadError::Io {
                path: shown.clone(),
                source,
            },
        })?;
        let records = match extra_records::parse(&bytes) {
            Ok(records) => records,
            Err(ExtraRecordsError::Empty) => Vec::new(),
            Err(error) => return Err(LoadError::Invalid { path: shown, error }),
        };
        Ok(RecordsFile {
            path: path.to_path_buf(),
            records,
            seen: Some(stamp),
            recheck: is_recent(&stamp, SystemTime::now()),
            last_bytes: Some(Sha256::digest(&bytes).into()),
            problem: None,
        })
    }

    /// The records being served.
    pub fn records(&self) -> &[ExtraRecord] {
        &self.records
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file must be read: its stamp differs from the last one looked at, or
    /// that one was too recent to trust.
    pub fn needs_read(&self, stamp: &Stamp) -> bool {
        self.recheck || self.seen.as_ref() != Some(stamp)
    }

    /// The file could not be looked at (gone, unreadable, too large, a directory).
    pub fn unreadable(&mut self, problem: String) -> Outcome {
        self.seen = None;
        self.last_bytes = None;
        self.report(problem)
    }

    /// One version of the file, read at `now`.
    pub fn take(&mut self, stamp: Stamp, bytes: &[u8], now: SystemTime) -> Outcome {
        self.seen = Some(stamp);
        self.recheck = is_recent(&stamp, now);
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if self.last_bytes == Some(hash) {
            return Outcome::Unchanged;
        }
        self.last_bytes = Some(hash);
        match extra_records::parse(bytes) {
            Ok(records) => {
                let recovered = self.problem.take().is_some();
                if records == self.records {
                    return if recovered {
                        Outcome::Recovered
                    } else {
                        Outcome::Unchanged
                    };
                }
                self.records = records.clone();
                Outcome::Changed(records)
            }
            Err(ExtraRecordsError::Empty) => Outcome::Waiting,
            Err(error) => self.report(error.to_string()),
        }
    }

    /// `Refused` the first time a problem is seen, `Unchanged` while it stands.
    fn report(&mut self, problem: String) -> Outcome {
        if self.problem.as_ref() == Some(&problem) {
            return Outcome::Unchanged;
        }
        self.problem = Some(problem.clone());
        Outcome::Refused(problem)
    }

    /// One look at the file (blocking I/O: run it off the async threads).
    pub fn poll(&mut self) -> Outcome {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta),
            Err(error) => return self.unreadable(format!("cannot be read: {error}")),
        };
        if !self.needs_read(&stamp) {
            return Outcome::Unchanged;
        }
        match read(&self.path) {
            // The stamp of the open file, so it describes exactly the bytes read.
            Ok((stamp, bytes)) => self.take(stamp, &bytes, SystemTime::now()),
            Err(ReadError::Io(error)) => self.unreadable(format!("cannot be read: {error}")),
            Err(ReadError::Directory) => self.unreadable("is a directory, not a file".into()),
            Err(ReadError::TooLarge(size)) => {
                self.unreadable(ExtraRecordsError::TooLarge { size }.to_string())
            }
        }
    }

    /// Polls every [`POLL_INTERVAL`] until `stop` resolves, handing each new set of records
    /// to the hub as a new `DNSConfig`.
    pub async fn watch(
        mut self,
        config: Config,
        hub: MapHub,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let looked = tokio::task::spawn_blocking(move || {
                let outcome = self.poll();
                (self, outcome)
            })
            .await;
            let outcome;
            (self, outcome) = match looked {
                Ok(looked) => looked,
                Err(error) => {
                    tracing::error!(%error, "the extra-records watcher stopped");
                    return;
                }
            };
            let path = self.path.display().to_string();
            let kept = self.records.len();
            match outcome {
                Outcome::Unchanged => {}
                Outcome::Waiting => {
                    tracing::debug!(%path, "extra-records file is empty; waiting for its writer");
                }
                Outcome::Refused(problem) => tracing::warn!(
                    "dns.extra_records_path: {path} {problem}; keeping the records in force ({kept})"
                ),
                Outcome::Recovered => {
                    tracing::info!(%path, records = kept, "extra-records file is valid again");
                }
                Outcome::Changed(records) => {
                    match SharedJson::new(&dns_config_with(&config, &records)) {
                        Ok(json) => {
                            hub.set_dns_config(json).await;
                            tracing::info!(%path, records = records.len(), "extra DNS records reloaded");
                        }
                        Err(error) => tracing::error!(%error, "cannot encode the DNS config"),
                    }
                }
            }
        }
    }
}

/// Whether `stamp`'s mtime is within [`RACY_WINDOW`] of `now` (or after it).
fn is_recent(stamp: &Stamp, now: SystemTime) -> bool {
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(_) => return true,
    };
    now - stamp.modified_seconds() < RACY_WINDOW.as_secs_f64()
}

enum ReadError {
    Io(std::io::Error),
    Directory,
    TooLarge(u64),
}

/// The file's stamp and bytes, refusing directories and anything over [`MAX_FILE_BYTES`]
/// (also when it grows while being read).
fn read(path: &Path) -> Result<(Stamp, Vec<u8>), ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.is_dir() {
        return Err(ReadError::Directory);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok((Stamp::of(&meta), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordType;

    const ONE: &str = r#"[{"name": "a.example", "type": "A", "value": "100.64.0.1"}]"#;
    const TWO: &str = r#"[{"name": "a.example", "type": "A", "value": "100.64.0.1"},
                          {"name": "b.example", "type": "AAAA", "value": "fd7a:115c:a1e0::2"}]"#;

    fn stamp(n: i64) -> Stamp {
        Stamp {
            len: 10,
            modified: (1_000 + n, 0),
            changed: (1_000 + n, 0),
            inode: 7,
            device: 1,
        }
    }

    /// Long after every stamp above: nothing is racy.
    fn later() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn watched(text: &str) -> (tempfile::TempDir, RecordsFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        std::fs::write(&path, text).unwrap();
        let file = RecordsFile::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn a_valid_change_is_served_and_an_identical_rewrite_is_not() {
        let (_dir, mut file) = watched(ONE);
        assert_eq!(file.records().len(), 1);
        assert!(file.needs_read(&stamp(1)));
        let Outcome::Changed(records) = file.take(stamp(1), TWO.as_bytes(), later()) else {
            panic!("not served");
        };
        assert_eq!(records[1].record_type, RecordType::Aaaa);
        assert!(!file.needs_read(&stamp(1)));
        // Touched, same bytes.
        assert_eq!(
            file.take(stamp(2), TWO.as_bytes(), later()),
            Outcome::Unchanged
        );
        // Different bytes, same records (reformatted).
        let reformatted = TWO.replace('\n', " ");
        assert_eq!(
            file.take(stamp(3), reformatted.as_bytes(), later()),
            Outcome::Unchanged
        );
    }

    #[test]
    fn a_bad_version_is_reported_once_and_the_records_stay() {
        let (_dir, mut file) = watched(ONE);
        let bad = r#"[{"name": "a.example", "type": "A", "value": "nope"}]"#;
        let Outcome::Refused(problem) = file.take(stamp(1), bad.as_bytes(), later()) else {
            panic!("not refused");
        };
        assert!(problem.starts_with("entry 0: \"nope\""), "{problem}");
        assert_eq!(file.records().len(), 1);
        assert_eq!(
            file.take(stamp(2), bad.as_bytes(), later()),
            Outcome::Unchanged
        );
        // Fixed back to what is served: nothing to send, but say it is fine again.
        assert_eq!(
            file.take(stamp(3), ONE.as_bytes(), later()),
            Outcome::Recovered
        );
        assert!(matches!(
            file.take(stamp(4), TWO.as_bytes(), later()),
            Outcome::Changed(_)
        ));
    }

    #[test]
    fn an_empty_file_is_waited_out_and_an_empty_array_clears() {
        let (_dir, mut file) = watched(ONE);
        assert_eq!(file.take(stamp(1), b"", later()), Outcome::Waiting);
        assert_eq!(file.records().len(), 1);
        assert_eq!(
            file.take(stamp(2), b"[]", later()),
            Outcome::Changed(Vec::new())
        );
    }

    #[test]
    fn a_vanished_file_keeps_the_records_and_is_read_when_back() {
        let (_dir, mut file) = watched(ONE);
        let gone = file.unreadable("cannot be read: No such file".into());
        assert!(matches!(gone, Outcome::Refused(_)));
        assert_eq!(
            file.unreadable("cannot be read: No such file".into()),
            Outcome::Unchanged
        );
        assert_eq!(file.records().len(), 1);
        // Back with the same content: read (no stamp is trusted), nothing new to send.
        assert!(file.needs_read(&stamp(0)));
        assert_eq!(
            file.take(stamp(0), ONE.as_bytes(), later()),
            Outcome::Recovered
        );
    }

    #[test]
    fn a_recently_modified_file_is_read_again() {
        let (_dir, mut file) = watched(ONE);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_001);
        file.take(stamp(1), TWO.as_bytes(), now);
        assert!(file.needs_read(&stamp(1)), "racy: read again");
        file.take(stamp(1), TWO.as_bytes(), later());
        assert!(!file.needs_read(&stamp(1)));
    }

    #[test]
    fn start_refuses_missing_bad_and_directory_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RecordsFile::open(&dir.path().join("nope.json")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read")
                && missing.to_string().contains("nope.json"),
            "{missing}"
        );
        let directory = RecordsFile::open(dir.path()).unwrap_err();
        assert!(
            directory.to_string().contains("is a directory"),
            "{directory}"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{}").unwrap();
        let invalid = RecordsFile::open(&bad).unwrap_err().to_string();
        assert!(
            invalid.ends_with("bad.json must be a JSON array of records, not an object"),
            "{invalid}"
        );
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "").unwrap();
        assert!(RecordsFile::open(&empty).unwrap().records().is_empty());
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        let too_large = RecordsFile::open(&big).unwrap_err().to_string();
        assert!(
            too_large.contains("more than the 1048576 allowed"),
            "{too_large}"
        );
    }

    #[test]
    fn poll_sees_a_rename_into_place() {
        let (dir, mut file) = watched(ONE);
        // Let the first version age past the racy window as far as `poll` is concerned.
        file.recheck = false;
        assert_eq!(file.poll(), Outcome::Unchanged);
        let staged = dir.path().join("records.json.tmp");
        std::fs::write(&staged, TWO).unwrap();
        std::fs::rename(&staged, file.path()).unwrap();
        assert!(matches!(file.poll(), Outcome::Changed(records) if records.len() == 2));
        std::fs::remove_file(file.path()).unwrap();
        assert!(matches!(file.poll(), Outcome::Refused(p) if p.starts_with("cannot be read")));
    }
}
