//! The event log file: append-only frames `len u32 | crc32c u32 | seq u64 | record` (the
//! seq field's top 16 bits hold the record's index within its batch), written
//! one batch at a time at the known end of the file (positioned writes, never `O_APPEND`) and
//! made durable with `fdatasync` before the append returns (group commit). Chosen over sled
//! for the log because sled's `flush` does not fsync (see ARCHITECTURE.md, "The store"). On
//! open the file is scanned: damage followed by an intact record of a later batch is damage
//! to acknowledged data and is reported, naming the damaged seq, never silently dropped;
//! damage confined to the last batch (never acknowledged) is a torn tail and is cut off.
//!
//! After any failed append the log is *poisoned*: nothing past the last acknowledged byte can
//! be trusted (a failed `fdatasync` may have dropped dirty pages that reads still show), so
//! the next append, or an explicit `recover`, first cuts the file back to that byte through a
//! fresh file handle and rescans it. Readers never wait on the file I/O of an append: the
//! index is swapped in under a short lock once the batch is durable.
//!
//! All file I/O goes through the small `LogFile` trait so tests can inject faults
//! (`tests/storage_faults.rs`).

use super::record::{StoredRecord, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN};
use super::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const FRAME_HEADER_LEN: usize = 4 + 4 + 8;
/// Read-ahead while indexing the log at open.
const SCAN_BUFFER_BYTES: usize = 1 << 20;
const MAX_BODY_LEN: usize = RECORD_HEADER_LEN + MAX_PAYLOAD_LEN;

fn io(error: std::io::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

/// The frame's 8-byte seq field also carries the record's index within its group commit in
/// its top 16 bits (0 for the first record of a batch, and in every frame written before
/// this field existed). It makes the commit point explicit: a batch is acknowledged only
/// once its fdatasync returns, and the next batch is written only after that.
const BATCH_INDEX_SHIFT: u32 = 48;
const SEQ_MASK: u64 = (1 << BATCH_INDEX_SHIFT) - 1;

/// The seq field as written for record `index` of a batch (saturating at 0xffff).
fn seq_field(seq: u64, index: usize) -> u64 {
    seq | ((index.min(0xffff) as u64) << BATCH_INDEX_SHIFT)
}

/// `(seq, first seq of its batch)` from a seq field.
fn split_seq_field(field: u64) -> (u64, u64) {
    let seq = field & SEQ_MASK;
    (seq, seq.saturating_sub(field >> BATCH_INDEX_SHIFT))
}

/// Over the raw seq field, so frames written before the batch index existed still check.
fn crc(seq_field: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq_field.to_be_bytes()), body)
}

/// The file operations the log needs: positioned reads and writes, `fdatasync`, truncate and
/// length. `File` is the real one; tests supply a fault-injecting model.
#[allow(clippy::len_without_is_empty)] // a file's length, not a collection's
pub trait LogFile: Send + Sync {
    /// Writes some of `buf` at `offset`, like `pwrite(2)`; may write fewer bytes.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize>;
    fn sync_data(&self) -> std::io::Result<()>;
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Reads some bytes at `offset`, like `pread(2)`; 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    fn len(&self) -> std::io::Result<u64>;
}

impl LogFile for File {
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        FileExt::write_at(self, buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Opens a fresh handle on the log file (creating it): at open and for every rescan.
pub type LogFileOpener = Arc<dyn Fn() -> std::io::Result<Arc<dyn LogFile>> + Send + Sync>;

/// The opener of a real file at `path` (read-write, created if missing, not `O_APPEND`).
pub fn file_opener(path: &Path) -> LogFileOpener {
    let path: PathBuf = path.to_path_buf();
    Arc::new(move || {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if !existed {
            // A new file's directory entry must be durable before anything in it is
            // acknowledged.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Arc::new(file) as Arc<dyn LogFile>)
    })
}

fn write_all_at(file: &dyn LogFile, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the log file accepted no bytes",
                ))
            }
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_exact_at(file: &dyn LogFile, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the log file ended early",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sequential reads through `read_at`, for the scan at open.
struct Cursor<'a> {
    file: &'a dyn LogFile,
    pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// What readers see: the file handle and the offsets of every acknowledged record.
#[derive(Clone)]
struct Index {
    file: Arc<dyn LogFile>,
    /// Byte offset of each record's frame; `offsets[seq - 1]`.
    offsets: Arc<Vec<u64>>,
    end: u64,
}

/// The append side, serialised by its own lock (readers never take it).
struct Tail {
    file: Arc<dyn LogFile>,
    /// Records acknowledged so far.
    last_seq: u64,
    /// Byte just past the last acknowledged frame: where the next append writes.
    end: u64,
    /// Set by any failed append: the next one rescans first.
    poisoned: bool,
}

pub struct SegmentLog {
    name: String,
    opener: LogFileOpener,
    tail: Mutex<Tail>,
    index: RwLock<Index>,
}

/// The result of scanning a file: frame offsets and the end of the last whole frame.
struct Scan {
    offsets: Vec<u64>,
    end: u64,
}

impl SegmentLog {
    /// Opens (creating) the log file and indexes it, cutting off a torn tail.
    pub fn open(path: &Path) -> Result<SegmentLog, StoreError> {
        Self::open_with(file_opener(path), path.display().to_string())
    }

    /// Opens the log through `opener` (`name` is for messages).
    pub fn open_with(opener: LogFileOpener, name: String) -> Result<SegmentLog, StoreError> {
        let file = opener().map_err(io)?;
        let scan = scan(file.as_ref(), &name)?;
        Ok(SegmentLog {
            tail: Mutex::new(Tail {
                file: file.clone(),
                last_seq: scan.offsets.len() as u64,
                end: scan.end,
                poisoned: false,
            }),
            index: RwLock::new(Index {
                file,
                offsets: Arc::new(scan.offsets),
                end: scan.end,
            }),
            name,
            opener,
        })
    }

    fn index(&self) -> Index {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn last_seq(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .offsets
            .len() as u64
    }

    /// Whether a failed append left the log waiting for a rescan.
    pub fn is_poisoned(&self) -> bool {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).poisoned
    }

    /// Cuts the file back to the last acknowledged byte through a fresh handle, makes that
    /// durable, rescans it and checks that it still holds exactly the acknowledged records.
    pub fn recover(&self) -> Result<(), StoreError> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        self.rescan(&mut tail)
    }

    fn rescan(&self, tail: &mut Tail) -> Result<(), StoreError> {
        let file = (self.opener)().map_err(io)?;
        let len = file.len().map_err(io)?;
        if len != tail.end {
            file.set_len(tail.end).map_err(io)?;
        }
        file.sync_data().map_err(io)?;
        let scan = scan(file.as_ref(), &self.name)?;
        if scan.offsets.len() as u64 != tail.last_seq || scan.end != tail.end {
            return Err(StoreError::ChainBroken {
                seq: (scan.offsets.len() as u64 + 1).min(tail.last_seq),
                reason: format!(
                    "event log {} holds {} records ({} bytes) after a rescan, but {} records \
                     ({} bytes) were acknowledged",
                    self.name,
                    scan.offsets.len(),
                    scan.end,
                    tail.last_seq,
                    tail.end
                ),
            });
        }
        tail.file = file.clone();
        tail.poisoned = false;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        index.file = file;
        index.offsets = Arc::new(scan.offsets);
        index.end = scan.end;
        Ok(())
    }

    /// Checks that the file takes writes again: rescans if poisoned, then writes a page of
    /// zeros past the end, fsyncs and cuts it off again (zeros past the end are a torn tail
    /// anyway, should a crash come in between).
    pub fn probe(&self) -> Result<(), StoreError> {
        const PROBE_BYTES: usize = 4096;
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.poisoned {
            self.rescan(&mut tail)?;
        }
        let file = tail.file.clone();
        let probed = write_all_at(file.as_ref(), &[0u8; PROBE_BYTES], tail.end)
            .and_then(|_| file.sync_data())
            .and_then(|_| file.set_len(tail.end))
            .and_then(|_| file.sync_data());
        if let Err(error) = probed {
            tail.poisoned = true;
            let _ = file.set_len(tail.end);
            return Err(io(error));
        }
        Ok(())
    }

    /// Appends records (which must continue at `last_seq() + 1`) and fdatasyncs. On any
    /// failure nothing of the batch counts and the log is poisoned until rescanned.
    pub fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.poisoned {
            self.rescan(&mut tail)?;
        }
        let mut buffer = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let expected = tail.last_seq + 1 + i as u64;
            if record.seq != expected {
                return Err(StoreError::OutOfOrder {
                    head: expected - 1,
                    got: record.seq,
                });
            }
            let body = record.to_bytes();
            offsets.push(tail.end + buffer.len() as u64);
            buffer.extend_from_slice(&(body.len() as u32).to_be_bytes());
            let field = seq_field(record.seq, i);
            buffer.extend_from_slice(&crc(field, &body).to_be_bytes());
            buffer.extend_from_slice(&field.to_be_bytes());
            buffer.extend_from_slice(&body);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        let file = tail.file.clone();
        let written = file
            .len()
            .and_then(|len| {
                if len == tail.end {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "the log file is {len} bytes, expected {}",
                        tail.end
                    )))
                }
            })
            .and_then(|_| write_all_at(file.as_ref(), &buffer, tail.end))
            .and_then(|_| file.sync_data());
        if let Err(error) = written {
            tail.poisoned = true;
            // Best effort; the rescan before the next append cuts back again and checks.
            let _ = file.set_len(tail.end);
            return Err(io(error));
        }
        tail.end += buffer.len() as u64;
        tail.last_seq += records.len() as u64;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(&mut index.offsets).extend(offsets);
        index.end = tail.end;
        Ok(())
    }

    /// Reads records `from..=to` with large sequential reads (replay's hot path): whole
    /// frames in chunks, each frame checked as in `read`.
    pub fn read_range(&self, from: u64, to: u64) -> Result<Vec<StoredRecord>, StoreError> {
        let index = self.index();
        let to = to.min(index.offsets.len() as u64);
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let start = index.offsets[(from - 1) as usize];
        let end = match index.offsets.get(to as usize) {
            Some(&next) => next,
            None => index.end,
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        read_exact_at(index.file.as_ref(), &mut bytes, start).map_err(io)?;
        let mut records = Vec::with_capacity((to - from + 1) as usize);
        let mut pos = 0usize;
        for seq in from..=to {
            match parse_frame(&bytes[pos..], seq) {
                Frame::Whole(len) => {
                    let body = &bytes[pos + FRAME_HEADER_LEN..pos + len];
                    records.push(
                        StoredRecord::from_bytes(seq, body)
                            .map_err(|source| StoreError::Corrupt { seq, source })?,
                    );
                    pos += len;
                }
                Frame::Torn | Frame::Corrupt(_) => {
                    return Err(StoreError::ChainBroken {
                        seq,
                        reason: "frame damaged since the log was opened".into(),
                    })
                }
            }
        }
        Ok(records)
    }

    /// Reads one record by seq.
    pub fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        let index = self.index();
        let Some(&offset) = seq
            .checked_sub(1)
            .and_then(|i| index.offsets.get(i as usize))
        else {
            return Ok(None);
        };
        let frame_end = index
            .offsets
            .get(seq as usize)
            .copied()
            .unwrap_or(index.end);
        let mut frame = vec![0u8; (frame_end - offset) as usize];
        read_exact_at(index.file.as_ref(), &mut frame, offset).map_err(io)?;
        match parse_frame(&frame, seq) {
            Frame::Whole(len) if len == frame.len() => {
                StoredRecord::from_bytes(seq, &frame[FRAME_HEADER_LEN..])
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt { seq, source })
            }
            _ => Err(StoreError::ChainBroken {
                seq,
                reason: "frame checksum mismatch".into(),
            }),
        }
    }
}

/// A whole frame: its seq and byte range in the file.
pub type FrameSpan = (u64, std::ops::Range<usize>);

/// The frames of a log held in memory, from the start up to the first damaged one: each
/// whole frame's `(seq, byte range)`, and the first damage as `(seq, reason)` (`None` when
/// the bytes end cleanly). For `events salvage`; nothing is changed.
pub fn salvage_scan(bytes: &[u8]) -> (Vec<FrameSpan>, Option<(u64, String)>) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let seq = frames.len() as u64 + 1;
        match parse_frame(&bytes[pos..], seq) {
            Frame::Whole(len) => {
                frames.push((seq, pos..pos + len));
                pos += len;
            }
            Frame::Torn => {
                return (
                    frames,
                    Some((seq, "torn tail (incomplete last write)".into())),
                )
            }
            Frame::Corrupt(reason) => return (frames, Some((seq, reason))),
        }
    }
    (frames, None)
}

/// Indexes a whole file, cutting a torn tail (and making the cut durable).
fn scan(file: &dyn LogFile, name: &str) -> Result<Scan, StoreError> {
    let file_len = file.len().map_err(io)?;
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, Cursor { file, pos: 0 });
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    while pos < file_len {
        let seq = offsets.len() as u64 + 1;
        match next_frame(&mut reader, file_len - pos, seq, &mut body).map_err(io)? {
            Frame::Whole(len) => {
                offsets.push(pos);
                pos += len as u64;
            }
            Frame::Torn => {
                tracing::warn!(
                    seq,
                    offset = pos,
                    cut = file_len - pos,
                    "cutting a torn tail off the event log"
                );
                file.set_len(pos).map_err(io)?;
                file.sync_data().map_err(io)?;
                break;
            }
            Frame::Corrupt(reason) => {
                return Err(StoreError::ChainBroken {
                    seq,
                    reason: format!("event log {name} is damaged at byte {pos}: {reason}"),
                })
            }
        }
    }
    Ok(Scan { offsets, end: pos })
}

enum Frame {
    Whole(usize),
    /// Incomplete or damaged with no intact later record after it: what a crash mid-append
    /// leaves (zeros, a partial frame, stale blocks past the old end).
    Torn,
    Corrupt(String),
}

/// Reads the next frame while indexing the file. The common case (a whole, valid frame)
/// streams; anything else reads the rest of the file and lets `parse_frame` decide between a
/// torn tail and damage, so the file is never held in memory whole.
fn next_frame(
    reader: &mut impl Read,
    remaining: u64,
    expected_seq: u64,
    body: &mut Vec<u8>,
) -> std::io::Result<Frame> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let header_read =
        remaining >= FRAME_HEADER_LEN as u64 && reader.read_exact(&mut header).is_ok();
    if header_read {
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let stored_crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        let field = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
        if (RECORD_HEADER_LEN..=MAX_BODY_LEN).contains(&len)
            && (FRAME_HEADER_LEN + len) as u64 <= remaining
        {
            body.resize(len, 0);
            reader.read_exact(body)?;
            if split_seq_field(field).0 == expected_seq && stored_crc == crc(field, body) {
                return Ok(Frame::Whole(FRAME_HEADER_LEN + len));
            }
            let mut rest = header.to_vec();
            rest.extend_from_slice(body);
            reader.read_to_end(&mut rest)?;
            return Ok(parse_frame(&rest, expected_seq));
        }
    }
    let mut rest = if header_read {
        header.to_vec()
    } else {
        Vec::new()
    };
    reader.read_to_end(&mut rest)?;
    Ok(parse_frame(&rest, expected_seq))
}

fn parse_frame(bytes: &[u8], expected_seq: u64) -> Frame {
    if bytes.len() < FRAME_HEADER_LEN {
        return Frame::Torn;
    }
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let stored_crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let field = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let (seq, _) = split_seq_field(field);
    if !(RECORD_HEADER_LEN..=MAX_BODY_LEN).contains(&len) {
        return damaged(
            bytes,
            expected_seq,
            format!("impossible frame length {len}"),
        );
    }
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return damaged(
            bytes,
            expected_seq,
            format!("a frame of {len} bytes runs past the end of the file"),
        );
    };
    if stored_crc != crc(field, body) {
        return damaged(bytes, expected_seq, "frame checksum mismatch".into());
    }
    if seq != expected_seq {
        return Frame::Corrupt(format!("expected record {expected_seq}, found {seq}"));
    }
    Frame::Whole(FRAME_HEADER_LEN + len)
}

/// Records further than this past a damaged one are not searched for (a batch is far
/// smaller; this only bounds the search).
const MAX_SEQ_DISTANCE: u64 = 1 << 20;

/// A damaged frame at the start of `bytes`: damage to acknowledged data if an intact record
/// of a *later batch* follows anywhere after it (that batch was written only after the
/// damaged one was fsynced and acknowledged), else a torn tail: what a crash leaves in the
/// last, unacknowledged batch (zeros, a partial frame, stale garbage, or later records of the
/// same batch that reached the disk before earlier ones). The search does not trust the
/// damaged frame's length (a flipped length bit must not hide the rest of the log). Frames
/// written before the batch index existed each count as their own batch.
fn damaged(bytes: &[u8], expected_seq: u64, reason: String) -> Frame {
    let intact_later = (1..bytes.len()).find_map(|pos| {
        let frame = &bytes[pos..];
        if frame.len() < FRAME_HEADER_LEN {
            return None;
        }
        let field = u64::from_be_bytes(frame[8..16].try_into().expect("8 bytes"));
        let (seq, batch_start) = split_seq_field(field);
        if batch_start <= expected_seq || seq - expected_seq > MAX_SEQ_DISTANCE {
            return None;
        }
        let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        if !(RECORD_HEADER_LEN..=MAX_BODY_LEN).contains(&len) {
            return None;
        }
        let body = frame.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
        let stored_crc = u32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
        (stored_crc == crc(field, body)).then_some(seq)
    });
    match intact_later {
        Some(later) => Frame::Corrupt(format!("{reason}, and record {later} follows intact")),
        None => Frame::Torn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::Digest;
    use crate::core::{Actor, Envelope, Event, Timestamp};

    fn records(from: u64, count: u64, prev: Digest) -> Vec<StoredRecord> {
        let envelopes: Vec<Envelope> = (from..from + count)
            .map(|seq| Envelope {
                seq,
                at: Timestamp(seq as i64),
                actor: Actor::System,
                event: Event::ServerStarted {
                    version: format!("v{seq}"),
                },
            })
            .collect();
        crate::store::record::encode_chain(&envelopes, prev).unwrap()
    }

    #[test]
    fn append_reopen_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = SegmentLog::open(&path).unwrap();
        let batch = records(1, 5, Digest::default());
        log.append(&batch).unwrap();
        assert!(log.append(&records(9, 1, Digest::default())).is_err());
        drop(log);
        let log = SegmentLog::open(&path).unwrap();
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.read(3).unwrap().unwrap(), batch[2]);
        assert_eq!(log.read(6).unwrap(), None);
        assert_eq!(log.read(0).unwrap(), None);
    }

    #[test]
    fn torn_tails_are_cut_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = SegmentLog::open(&path).unwrap();
        // Three batches of one record.
        for record in records(1, 3, Digest::default()) {
            log.append(&[record]).unwrap();
        }
        drop(log);
        let whole = std::fs::read(&path).unwrap();

        // A half-written last frame.
        std::fs::write(&path, &whole[..whole.len() - 7]).unwrap();
        assert_eq!(SegmentLog::open(&path).unwrap().last_seq(), 2);
        // Zeros where the last frame's data should be (size grew, data never landed).
        let mut zeroed = whole.clone();
        let n = zeroed.len();
        zeroed[n - 40..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(SegmentLog::open(&path).unwrap().last_seq(), 2);
        // A flipped byte in the middle, with good data after it, is damage, not a tail.
        let mut flipped = whole.clone();
        flipped[30] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let error = SegmentLog::open(&path).err().unwrap().to_string();
        assert!(error.contains("damaged"), "{error}");
    }

    #[test]
    fn damage_confined_to_the_last_batch_is_a_torn_tail_and_earlier_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = SegmentLog::open(&path).unwrap();
        let all = records(1, 6, Digest::default());
        log.append(&all[..3]).unwrap();
        log.append(&all[3..]).unwrap();
        let second_batch = log.index().offsets[3] as usize;
        let first_batch_second = log.index().offsets[1] as usize;
        drop(log);
        let whole = std::fs::read(&path).unwrap();

        // Power loss in the last batch: its first record never reached the disk, the later
        // ones did (out-of-order persistence). Nothing of it was acknowledged: cut.
        let mut lost = whole.clone();
        lost[second_batch..second_batch + 40].fill(0);
        std::fs::write(&path, &lost).unwrap();
        let log = SegmentLog::open(&path).unwrap();
        assert_eq!(log.last_seq(), 3);
        assert_eq!(log.read(3).unwrap().unwrap(), all[2]);
        drop(log);
        assert_eq!(std::fs::read(&path).unwrap(), whole[..second_batch]);

        // Damage in the first batch, with the second (written after the first was
        // acknowledged) intact: refused, naming record 2.
        let mut damaged = whole.clone();
        damaged[first_batch_second + 30] ^= 0x01;
        std::fs::write(&path, &damaged).unwrap();
        match SegmentLog::open(&path) {
            Err(StoreError::ChainBroken { seq: 2, reason }) => {
                assert!(reason.contains("record 4 follows intact"), "{reason}")
            }
            Err(other) => panic!("wrong refusal: {other}"),
            Ok(_) => panic!("damage before a later batch must be refused"),
        }

        // Stale garbage past the end (not zeros) after the last batch: a torn tail.
        let mut garbage = whole.clone();
        garbage.extend(std::iter::repeat_n(0x5a, 300));
        std::fs::write(&path, &garbage).unwrap();
        assert_eq!(SegmentLog::open(&path).unwrap().last_seq(), 6);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
    }
}
