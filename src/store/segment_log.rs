//! The event log file: append-only frames `len u32 | crc32c u32 | seq u64 | record`, written
//! one batch at a time and made durable with `fdatasync` before the append returns (group
//! commit). Chosen over sled for the log because sled's `flush` does not fsync (see
//! ARCHITECTURE.md, "The store"). On open the file is scanned: a torn tail left by a crash is
//! cut off; damage anywhere else is reported, never silently dropped.

use super::record::{StoredRecord, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN};
use super::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const FRAME_HEADER_LEN: usize = 4 + 4 + 8;
/// Read-ahead while indexing the log at open.
const SCAN_BUFFER_BYTES: usize = 1 << 20;
const MAX_BODY_LEN: usize = RECORD_HEADER_LEN + MAX_PAYLOAD_LEN;

fn io(error: std::io::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

fn crc(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_be_bytes()), body)
}

pub struct SegmentLog {
    file: File,
    /// Byte offset of each record's frame; `offsets[seq - 1]`.
    offsets: Vec<u64>,
    end: u64,
}

impl SegmentLog {
    /// Opens (creating) the log file and indexes it, cutting off a torn tail.
    pub fn open(path: &Path) -> Result<SegmentLog, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, &file);
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
                    file.sync_all().map_err(io)?;
                    break;
                }
                Frame::Corrupt(reason) => {
                    return Err(StoreError::ChainBroken {
                        seq,
                        reason: format!(
                            "event log {} is damaged at byte {pos}: {reason}",
                            path.display()
                        ),
                    })
                }
            }
        }
        Ok(SegmentLog {
            file,
            offsets,
            end: pos,
        })
    }

    pub fn last_seq(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Appends records (which must continue at `last_seq() + 1`) and fdatasyncs.
    pub fn append(&mut self, records: &[StoredRecord]) -> Result<(), StoreError> {
        let mut buffer = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let expected = self.last_seq() + 1 + i as u64;
            if record.seq != expected {
                return Err(StoreError::OutOfOrder {
                    head: expected - 1,
                    got: record.seq,
                });
            }
            let body = record.to_bytes();
            offsets.push(self.end + buffer.len() as u64);
            buffer.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buffer.extend_from_slice(&crc(record.seq, &body).to_be_bytes());
            buffer.extend_from_slice(&record.seq.to_be_bytes());
            buffer.extend_from_slice(&body);
        }
        let written = self
            .file
            .write_all(&buffer)
            .and_then(|_| self.file.sync_data());
        if let Err(error) = written {
            // Leave the file as the index says; the engine reopens and rescans anyway.
            let _ = self.file.set_len(self.end);
            return Err(io(error));
        }
        self.end += buffer.len() as u64;
        self.offsets.extend(offsets);
        Ok(())
    }

    /// Reads records `from..=to` with large sequential reads (replay's hot path): whole
    /// frames in chunks of about `READ_CHUNK_BYTES`, each frame checked as in `read`.
    pub fn read_range(&self, from: u64, to: u64) -> Result<Vec<StoredRecord>, StoreError> {
        let to = to.min(self.last_seq());
        let from = from.max(1);
        if from > to {
            return Ok(Vec::new());
        }
        let start = self.offsets[(from - 1) as usize];
        let end = match self.offsets.get(to as usize) {
            Some(&next) => next,
            None => self.end,
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut bytes, start).map_err(io)?;
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
        let Some(&offset) = seq
            .checked_sub(1)
            .and_then(|i| self.offsets.get(i as usize))
        else {
            return Ok(None);
        };
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.file.read_exact_at(&mut header, offset).map_err(io)?;
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0u8; len];
        self.file
            .read_exact_at(&mut body, offset + FRAME_HEADER_LEN as u64)
            .map_err(io)?;
        let stored_crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        if stored_crc != crc(seq, &body) {
            return Err(StoreError::ChainBroken {
                seq,
                reason: "frame checksum mismatch".into(),
            });
        }
        StoredRecord::from_bytes(seq, &body)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { seq, source })
    }
}

enum Frame {
    Whole(usize),
    /// Incomplete, or damaged with only zeros after it: what a crash mid-append leaves.
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
        let seq = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
        if (RECORD_HEADER_LEN..=MAX_BODY_LEN).contains(&len)
            && (FRAME_HEADER_LEN + len) as u64 <= remaining
        {
            body.resize(len, 0);
            reader.read_exact(body)?;
            if seq == expected_seq && stored_crc == crc(seq, body) {
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
    let seq = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let rest_is_zero = || bytes.iter().all(|b| *b == 0);
    if !(RECORD_HEADER_LEN..=MAX_BODY_LEN).contains(&len) {
        return if rest_is_zero() {
            Frame::Torn
        } else {
            Frame::Corrupt(format!("impossible frame length {len}"))
        };
    }
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Frame::Torn;
    };
    if stored_crc != crc(seq, body) {
        // Damage in the last frame (nothing but zeros after it) is a torn write.
        let after_is_zero = bytes[FRAME_HEADER_LEN + len..].iter().all(|b| *b == 0);
        return if after_is_zero {
            Frame::Torn
        } else {
            Frame::Corrupt("frame checksum mismatch".into())
        };
    }
    if seq != expected_seq {
        return Frame::Corrupt(format!("expected record {expected_seq}, found {seq}"));
    }
    Frame::Whole(FRAME_HEADER_LEN + len)
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
        let mut log = SegmentLog::open(&path).unwrap();
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
        let mut log = SegmentLog::open(&path).unwrap();
        log.append(&records(1, 3, Digest::default())).unwrap();
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
}
