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
