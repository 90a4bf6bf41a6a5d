//! A portable file form of the log: `HSEVLOG1` then, per record, `seq u64 BE | len u32 BE |
//! record bytes` (the bytes exactly as stored, so the hash chain survives the trip). Used for
//! the golden logs in `events/` and for moving a log between stores.

use super::record::{DecodeError, StoredRecord, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN};

const MAGIC: &[u8; 8] = b"HSEVLOG1";

pub fn write_log(records: &[StoredRecord]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for record in records {
        let bytes = record.to_bytes();
        out.extend_from_slice(&record.seq.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Parses a log file; every record is checked against its payload hash (not the chain).
pub fn read_log(mut bytes: &[u8]) -> Result<Vec<StoredRecord>, DecodeError> {
    bytes = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| DecodeError::Malformed("not an event log file (bad magic)".into()))?;
    let mut records = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        let seq = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD_LEN + RECORD_HEADER_LEN {
            return Err(DecodeError::TooLarge(len));
        }
        let body = bytes
            .get(12..12 + len)
            .ok_or(DecodeError::Truncated(bytes.len()))?;
        records.push(StoredRecord::from_bytes(seq, body)?);
        bytes = &bytes[12 + len..];
    }
    Ok(records)
}

/// Writes the file's magic; records follow with `write_record` (streaming, for logs too big
/// to hold in memory).
pub fn write_header(out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(MAGIC)
}

/// Writes one record in the file form.
pub fn write_record(out: &mut impl std::io::Write, record: &StoredRecord) -> std::io::Result<()> {
    let bytes = record.to_bytes();
    out.write_all(&record.seq.to_be_bytes())?;
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(&bytes)
}

/// Reads a log file record by record (each checked against its payload hash, not the
/// chain); the first error ends it.
pub struct LogReader<R> {
    input: R,
    started: bool,
    failed: bool,
}

impl<R: std::io::Read> LogReader<R> {
    pub fn new(input: R) -> LogReader<R> {
        LogReader {
            input,
            started: false,
            failed: false,
        }
    }

    fn next_record(&mut self) -> Result<Option<StoredRecord>, DecodeError> {
        let io = |e: std::io::Error| DecodeError::Malformed(format!("reading the file: {e}"));
        if !self.started {
            self.started = true;
            let mut magic = [0u8; 8];
            self.input
                .read_exact(&mut magic)
                .map_err(|_| DecodeError::Malformed("not an event log file (bad magic)".into()))?;
            if &magic != MAGIC {
                return Err(DecodeError::Malformed(
                    "not an event log file (bad magic)".into(),
                ));
            }
        }
        let mut header = [0u8; 12];
        let mut filled = 0;
        while filled < header.len() {
            match self.input.read(&mut header[filled..]).map_err(io)? {
                0 if filled == 0 => return Ok(None),
                0 => return Err(DecodeError::Truncated(filled)),
                n => filled += n,
            }
        }
        let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD_LEN + RECORD_HEADER_LEN {
            return Err(DecodeError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        self.input
            .read_exact(&mut body)
            .map_err(|_| DecodeError::Truncated(len))?;
        StoredRecord::from_bytes(seq, &body).map(Some)
    }
}

impl<R: std::io::Read> Iterator for LogReader<R> {
    type Item = Result<StoredRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_record().transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}
