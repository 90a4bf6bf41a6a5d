//! The portable, verifiable form of the log (`headscale events export`): JSON lines an
//! auditor can read, a SIEM can ingest, and anyone can check offline without a server.
//!
//! Line 1 is the header (format and version, the range `since < seq <= until`, the chain hash
//! of record `since` so a partial export verifies on its own, the checkpoint public key, the
//! exporting tool). Then one line per record — seq, time, actor, type and the event as JSON
//! for people, plus the exact stored payload (base64), prev hash and chain hash — each
//! followed by the signed checkpoints taken at that record. The trailer (counts, last seq and
//! hash) makes truncation visible.
//!
//! Every line is canonical: the verifier re-renders each line from what it proves (the
//! payload for a record) and requires the same bytes, so nothing readable can be edited,
//! added or duplicated unnoticed. The chain hash is over the stored bytes, never a
//! re-encoding (`record.rs`). Pure: no I/O beyond `Read`/`Write`; lines are bounded by
//! [`MAX_LINE_LEN`] on both sides, so whatever is written can be read back (fuzzed: `fuzz/`
//! target `jsonl_export`).

use super::record::{sha256, StoredRecord, MAX_PAYLOAD_LEN};
use super::Checkpoint;
use crate::core::event::SCHEMA_VERSION;
use crate::core::keys::Digest;
use crate::core::{Envelope, Event, Timestamp};
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};

/// The header's `format`.
pub const FORMAT: &str = "headscale-rs events";
/// The header's `formatVersion`; a reader refuses a newer one.
pub const FORMAT_VERSION: u32 = 1;
/// The longest line, without its line end. A record's payload is at most 1 MiB
/// (`MAX_PAYLOAD_LEN`): its base64 and its readable JSON (where escaping can grow text up to
/// six times) stay well below this. The writer refuses longer lines too.
pub const MAX_LINE_LEN: usize = 16 << 20;

/// The first bytes of an export (`{"kind":"header"`): how a reader tells this form from the
/// older binary one (`export.rs`, `HSEVLOG1`).
pub const MAGIC: &[u8] = br#"{"kind":"header""#;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The header line: what the file claims to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Records after this seq are exported (0: from the first).
    pub since: u64,
    /// The last exported seq.
    pub until: u64,
    /// The chain hash of record `since` (zero when `since` is 0): where the chain resumes.
    pub prev_hash: Digest,
    /// The server's checkpoint verifying key, when known.
    pub public_key: Option<[u8; 32]>,
    /// The exporting tool and version.
    pub tool: String,
    pub exported_at: Timestamp,
}

/// The trailer line: what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub records: u64,
    pub checkpoints: u64,
    pub last_seq: u64,
    pub last_hash: Digest,
}

/// The shape of each line (`kind` first).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Line {
    Header(HeaderLine),
    Record(RecordLine),
    Checkpoint(CheckpointLine),
    Trailer(TrailerLine),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderLine {
    format: String,
    format_version: u32,
    since: u64,
    until: u64,
    prev_hash: String,
    public_key: Option<String>,
    tool: String,
    exported_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordLine {
    seq: u64,
    time: String,
    actor: String,
    #[serde(rename = "type")]
    event_type: String,
    /// The event's own fields, for people and SIEMs (checked against the payload).
    event: serde_json::Value,
    /// The record's schema version byte.
    schema: u8,
    /// The stored payload, base64: what the chain hash covers.
    payload: String,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointLine {
    seq: u64,
    hash: String,
    time: String,
    /// What the signature covers (milliseconds since the epoch).
    at_ms: i64,
    public_key: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrailerLine {
    records: u64,
    checkpoints: u64,
    last_seq: u64,
    last_hash: String,
}

/// The event's own fields as the API shows them (`data` of `/api/v1/events`).
pub fn readable_event(event: &Event) -> serde_json::Value {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut outer)) if outer.len() == 1 => outer
            .remove(event.kind())
            .unwrap_or(serde_json::Value::Null),
        Ok(other) => other,
        Err(_) => serde_json::Value::Null,
    }
}

fn render(line: &Line) -> Vec<u8> {
    // Plain structs of strings, numbers and JSON values always serialize.
    let mut bytes = serde_json::to_vec(line).expect("an export line serializes");
    bytes.push(b'\n');
    bytes
}

fn header_line(header: &Header) -> Line {
    Line::Header(HeaderLine {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        since: header.since,
        until: header.until,
        prev_hash: header.prev_hash.to_hex(),
        public_key: header.public_key.map(hex::encode),
        tool: header.tool.clone(),
        exported_at: header.exported_at.to_rfc3339(),
    })
}

fn record_line(record: &StoredRecord, envelope: &Envelope) -> Line {
    Line::Record(RecordLine {
        seq: record.seq,
        time: envelope.at.to_rfc3339(),
        actor: envelope.actor.to_string(),
        event_type: envelope.event.kind().into(),
        event: readable_event(&envelope.event),
        schema: record.version,
        payload: BASE64.encode(&record.payload),
        prev_hash: record.prev_hash.to_hex(),
        hash: record.hash().to_hex(),
    })
}

fn checkpoint_line(checkpoint: &Checkpoint) -> Line {
    Line::Checkpoint(CheckpointLine {
        seq: checkpoint.seq,
        hash: checkpoint.hash.to_hex(),
        time: checkpoint.at.to_rfc3339(),
        at_ms: checkpoint.at.unix_ms(),
        public_key: hex::encode(checkpoint.public_key),
        signature: hex::encode(&checkpoint.signature),
    })
}

fn trailer_line(trailer: &Trailer) -> Line {
    Line::Trailer(TrailerLine {
        records: trailer.records,
        checkpoints: trailer.checkpoints,
        last_seq: trailer.last_seq,
        last_hash: trailer.last_hash.to_hex(),
    })
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// What the store handed over does not form the chain the header announced.
    #[error("record {seq}: {reason}")]
    Chain { seq: u64, reason: String },
}

/// Writes an export line by line, checking on the way that the records form the chain the
/// header announced, so a file it finishes always verifies.
pub struct Writer<W> {
    out: W,
    until: u64,
    next_seq: u64,
    last_hash: Digest,
    records: u64,
    checkpoints: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the header.
    pub fn new(mut out: W, header: &Header) -> Result<Writer<W>, ExportError> {
        if header.since > header.until || header.until == u64::MAX {
            return Err(ExportError::Chain {
                seq: header.since,
                reason: format!("no log has the range {}..={}", header.since, header.until),
            });
        }
        out.write_all(&render(&header_line(header)))?;
        Ok(Writer {
            out,
            until: header.until,
            next_seq: header.since + 1,
            last_hash: header.prev_hash,
            records: 0,
            checkpoints: 0,
        })
    }

    /// Writes the next record (`since + 1`, then each following one).
    pub fn record(&mut self, record: &StoredRecord) -> Result<(), ExportError> {
        let chain = |reason: String| ExportError::Chain {
            seq: record.seq,
            reason,
        };
        if record.seq != self.next_seq || record.seq > self.until {
            return Err(chain(format!(
                "out of order: expected record {} (the export runs to {})",
                self.next_seq, self.until
            )));
        }
        if record.prev_hash != self.last_hash {
            return Err(chain("prev_hash does not match the previous record".into()));
        }
        let envelope = record
            .envelope()
            .map_err(|e| chain(format!("cannot decode: {e}")))?;
        let line = render(&record_line(record, &envelope));
        if line.len() - 1 > MAX_LINE_LEN {
            return Err(chain(format!(
                "its line would be {} bytes, over the {MAX_LINE_LEN}-byte limit",
                line.len() - 1
            )));
        }
        self.out.write_all(&line)?;
        self.last_hash = record.hash();
        self.next_seq += 1;
        self.records += 1;
        Ok(())
    }

    /// Writes a checkpoint taken at the record just written.
    pub fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), ExportError> {
        if self.records == 0 || checkpoint.seq != self.next_seq - 1 {
            return Err(ExportError::Chain {
                seq: checkpoint.seq,
                reason: "a checkpoint must follow the record it was taken at".into(),
            });
        }
        if checkpoint.hash != self.last_hash {
            return Err(ExportError::Chain {
                seq: checkpoint.seq,
                reason: "the signed checkpoint names another chain hash than the log's".into(),
            });
        }
        self.out.write_all(&render(&checkpoint_line(checkpoint)))?;
        self.checkpoints += 1;
        Ok(())
    }

    /// The output so far (to hand on a chunk at a time).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the trailer; every announced record must have been written.
    pub fn finish(mut self) -> Result<(W, Trailer), ExportError> {
        if self.next_seq != self.until + 1 {
            return Err(ExportError::Chain {
                seq: self.next_seq,
                reason: format!(
                    "the export ends before it (it was announced to run to {})",
                    self.until
                ),
            });
        }
        let trailer = Trailer {
            records: self.records,
            checkpoints: self.checkpoints,
            last_seq: self.until,
            last_hash: self.last_hash,
        };
        self.out.write_all(&render(&trailer_line(&trailer)))?;
        Ok((self.out, trailer))
    }
}

/// What is wrong with an export: the line, the first bad seq when there is one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyError {
    pub line: u64,
    pub seq: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq} (line {}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Reads lines of at most [`MAX_LINE_LEN`] bytes, each ended by `\n`.
pub struct Lines<R> {
    input: R,
    /// The number of the last line read (1-based).
    line: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(input: R) -> Lines<R> {
        Lines { input, line: 0 }
    }

    /// The next line without its `\n`; `None` at the end of the input.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, VerifyError>> {
        let mut buffer = Vec::new();
        let limit = MAX_LINE_LEN as u64 + 1;
        let read = (&mut self.input).take(limit).read_until(b'\n', &mut buffer);
        self.line += 1;
        let error = |reason: String| {
            Some(Err(VerifyError {
                line: self.line,
                seq: None,
                reason,
            }))
        };
        match read {
            Err(e) => error(format!("cannot read the file: {e}")),
            Ok(0) => None,
            Ok(_) if buffer.last() == Some(&b'\n') => {
                buffer.pop();
                Some(Ok(buffer))
            }
            Ok(n) if n as u64 == limit => error(format!(
                "the line is longer than the {MAX_LINE_LEN}-byte limit"
            )),
            Ok(_) => error("the line has no line end: the file was cut short".into()),
        }
    }
}

/// One verified line.
#[derive(Debug, Clone)]
pub enum Item {
    Header(Header),
    Record(StoredRecord, Box<Envelope>),
    Checkpoint(Checkpoint),
    Trailer(Trailer),
}

/// Where the key the checkpoints were checked against came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySource {
    /// Given by the verifier (`--key`).
    Pinned,
    /// Taken from the file's header (it proves only that the file is consistent).
    File,
    /// No key anywhere (there were no checkpoints to check).
    None,
}

/// What a whole file was found to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub header: Header,
    pub records: u64,
    pub checkpoints: u64,
    /// The seq of the last verified checkpoint: records up to it are signed.
    pub last_signed_seq: Option<u64>,
    /// The chain hash of the last record (the header's `prev_hash` when there are none).
    pub head_hash: Digest,
    pub key: Option<[u8; 32]>,
    pub key_source: KeySource,
}

/// Checks an export line by line: the header, every record's hash chain from the header's
/// starting hash, that each readable part is what its payload says, every checkpoint's
/// signature, and the trailer. It stops at the first bad line.
pub struct Verifier {
    pinned: Option<VerifyingKey>,
    line: u64,
    header: Option<Header>,
    key: Option<VerifyingKey>,
    key_source: KeySource,
    next_seq: u64,
    last_hash: Digest,
    records: u64,
    checkpoints: u64,
    last_signed_seq: Option<u64>,
    trailer: Option<Trailer>,
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| format!("{what} is not 64 hex digits"))?;
    Ok(Digest(bytes))
}

/// Parses a checkpoint public key: 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| "a checkpoint public key is 64 hex digits".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 public key".to_string())
}

impl Verifier {
    /// `pinned`: the key checkpoints must be signed with (the file's own key otherwise).
    pub fn new(pinned: Option<VerifyingKey>) -> Verifier {
        Verifier {
            pinned,
            line: 0,
            header: None,
            key: None,
            key_source: KeySource::None,
            next_seq: 0,
            last_hash: Digest::default(),
            records: 0,
            checkpoints: 0,
            last_signed_seq: None,
            trailer: None,
        }
    }

    /// The number of the last line given.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    fn fail<T>(&self, seq: Option<u64>, reason: impl Into<String>) -> Result<T, VerifyError> {
        Err(VerifyError {
            line: self.line,
            seq,
            reason: reason.into(),
        })
    }

    /// Checks the next line (without its `\n`).
    pub fn line(&mut self, bytes: &[u8]) -> Result<Item, VerifyError> {
        self.line += 1;
        // The seq a damaged record line stands for: the one expected there.
        let here = (self.header.is_some() && self.trailer.is_none()).then_some(self.next_seq);
        if self.trailer.is_some() {
            return self.fail(None, "there is more after the trailer line");
        }
        let parsed: Line = match serde_json::from_slice(bytes) {
            Ok(line) => line,
            Err(e) => {
                let what = if self.header.is_none() {
                    "not an export header (is this a `headscale events export` file?)"
                } else {
                    "not a valid export line"
                };
                return self.fail(here, format!("{what}: {e}"));
            }
        };
        let (item, canonical) = match parsed {
            Line::Header(line) => self.header(line)?,
            _ if self.header.is_none() => {
                return self.fail(None, "the file does not start with an export header")
            }
            Line::Record(line) => self.record(line)?,
            Line::Checkpoint(line) => self.checkpoint(line)?,
            Line::Trailer(line) => self.trailer(line)?,
        };
        if canonical != bytes {
            let seq = match &item {
                Item::Header(_) => None,
                Item::Record(record, _) => Some(record.seq),
                Item::Checkpoint(checkpoint) => Some(checkpoint.seq),
                Item::Trailer(trailer) => Some(trailer.last_seq),
            };
            let reason = match &item {
                Item::Record(record, envelope) => differing_field(bytes, record, envelope),
                _ => "the line was edited (it is not what its own values render to)".into(),
            };
            return self.fail(seq, reason);
        }
        Ok(item)
    }

    fn header(&mut self, line: HeaderLine) -> Result<(Item, Vec<u8>), VerifyError> {
        if self.header.is_some() {
            return self.fail(Some(self.next_seq), "a second header line");
        }
        if line.format != FORMAT {
            return self.fail(None, format!("unknown format {:?}", line.format));
        }
        if line.format_version != FORMAT_VERSION {
            return self.fail(
                None,
                format!(
                    "format version {} (this tool reads version {FORMAT_VERSION})",
                    line.format_version
                ),
            );
        }
        if line.since > line.until || line.until == u64::MAX {
            return self.fail(
                None,
                format!("no log has the range {}..={}", line.since, line.until),
            );
        }
        let prev_hash =
            parse_digest(&line.prev_hash, "prevHash").or_else(|e| self.fail(None, e))?;
        if line.since == 0 && prev_hash != Digest::default() {
            return self.fail(None, "an export from the start must begin at the zero hash");
        }
        let file_key = match &line.public_key {
            Some(text) => Some(parse_public_key(text).or_else(|e| self.fail(None, e))?),
            None => None,
        };
        let Some(exported_at) = Timestamp::parse_rfc3339(&line.exported_at) else {
            return self.fail(None, "exportedAt is not an RFC 3339 time");
        };
        (self.key, self.key_source) = match (self.pinned, file_key) {
            (Some(pinned), Some(file)) if pinned != file => {
                return self.fail(
                    None,
                    format!(
                        "the file's checkpoint key {} is not the pinned key {}",
                        hex::encode(file.to_bytes()),
                        hex::encode(pinned.to_bytes())
                    ),
                )
            }
            (Some(pinned), _) => (Some(pinned), KeySource::Pinned),
            (None, Some(file)) => (Some(file), KeySource::File),
            (None, None) => (None, KeySource::None),
        };
        let header = Header {
            since: line.since,
            until: line.until,
            prev_hash,
            public_key: file_key.map(|k| k.to_bytes()),
            tool: line.tool,
            exported_at,
        };
        self.next_seq = header.since + 1;
        self.last_hash = header.prev_hash;
        let mut canonical = render(&header_line(&header));
        canonical.pop();
        self.header = Some(header.clone());
        Ok((Item::Header(header), canonical))
    }

    fn record(&mut self, line: RecordLine) -> Result<(Item, Vec<u8>), VerifyError> {
        let expected = self.next_seq;
        let until = self.header.as_ref().map_or(0, |h| h.until);
        if expected > until {
            return self.fail(
                Some(line.seq),
                format!("a record after the header's last seq {until}"),
            );
        }
        if line.seq != expected {
            return self.fail(
                Some(expected),
                format!(
                    "record {expected} is missing or out of order (found seq {} in its place)",
                    line.seq
                ),
            );
        }
        let here = Some(expected);
        let prev_hash =
            parse_digest(&line.prev_hash, "prevHash").or_else(|e| self.fail(here, e))?;
        if prev_hash != self.last_hash {
            return self.fail(
                here,
                "prevHash is not the previous record's hash: the chain breaks here",
            );
        }
        let hash = parse_digest(&line.hash, "hash").or_else(|e| self.fail(here, e))?;
        if line.schema != SCHEMA_VERSION {
            return self.fail(here, format!("unknown schema version {}", line.schema));
        }
        if line.payload.len() > (MAX_PAYLOAD_LEN / 3 + 1) * 4 {
            return self.fail(here, "the payload is over the 1 MiB limit of an event");
        }
        let payload = BASE64
            .decode(&line.payload)
            .or_else(|e| self.fail(here, format!("the payload is not base64: {e}")))?;
        let record = StoredRecord {
            seq: expected,
            version: line.schema,
            prev_hash,
            payload_hash: sha256(&payload),
            payload,
        };
        if record.hash() != hash {
            return self.fail(
                here,
                "the hash does not match the payload (the payload or the hash was changed)",
            );
        }
        let envelope = record
            .envelope()
            .or_else(|e| self.fail(here, format!("the payload does not decode: {e}")))?;
        let mut canonical = render(&record_line(&record, &envelope));
        canonical.pop();
        self.last_hash = hash;
        self.next_seq += 1;
        self.records += 1;
        Ok((Item::Record(record, Box::new(envelope)), canonical))
    }

    fn checkpoint(&mut self, line: CheckpointLine) -> Result<(Item, Vec<u8>), VerifyError> {
        let here = Some(line.seq);
        if self.records == 0 || line.seq != self.next_seq - 1 {
            return self.fail(
                here,
                "a checkpoint that does not follow the record it was taken at",
            );
        }
        let hash = parse_digest(&line.hash, "hash").or_else(|e| self.fail(here, e))?;
        if hash != self.last_hash {
            return self.fail(
                here,
                "the signed checkpoint names another chain hash than the record's",
            );
        }
        let mut public_key = [0u8; 32];
        hex::decode_to_slice(&line.public_key, &mut public_key)
            .or_else(|_| self.fail(here, "the checkpoint's publicKey is not 64 hex digits"))?;
        if line.signature.len() > 128 {
            return self.fail(here, "the checkpoint's signature is not 64 bytes");
        }
        let signature = hex::decode(&line.signature)
            .or_else(|_| self.fail(here, "the checkpoint's signature is not hex"))?;
        let checkpoint = Checkpoint {
            seq: line.seq,
            hash,
            at: Timestamp::from_unix_ms(line.at_ms),
            public_key,
            signature,
        };
        let Some(key) = self.key else {
            return self.fail(
                here,
                "the file names no checkpoint key, so the signature cannot be checked (give --key)",
            );
        };
        checkpoint
            .verify(&key)
            .or_else(|e| self.fail(here, format!("checkpoint: {e}")))?;
        let mut canonical = render(&checkpoint_line(&checkpoint));
        canonical.pop();
        self.checkpoints += 1;
        self.last_signed_seq = Some(line.seq);
        Ok((Item::Checkpoint(checkpoint), canonical))
    }

    fn trailer(&mut self, line: TrailerLine) -> Result<(Item, Vec<u8>), VerifyError> {
        let until = self.header.as_ref().map_or(0, |h| h.until);
        if self.next_seq <= until {
            return self.fail(
                Some(self.next_seq),
                format!(
                    "record {} is missing: the file ends at the trailer, the header says it runs to {until}",
                    self.next_seq
                ),
            );
        }
        let last_hash =
            parse_digest(&line.last_hash, "lastHash").or_else(|e| self.fail(None, e))?;
        let trailer = Trailer {
            records: line.records,
            checkpoints: line.checkpoints,
            last_seq: line.last_seq,
            last_hash,
        };
        let found = Trailer {
            records: self.records,
            checkpoints: self.checkpoints,
            last_seq: until,
            last_hash: self.last_hash,
        };
        if trailer.records != found.records || trailer.last_seq != found.last_seq {
            return self.fail(
                None,
                format!(
                    "the trailer counts {} records to seq {}, the file holds {} to seq {}",
                    trailer.records, trailer.last_seq, found.records, found.last_seq
                ),
            );
        }
        if trailer.checkpoints != found.checkpoints {
            return self.fail(
                None,
                format!(
                    "the trailer counts {} checkpoints, the file holds {} (one was removed or added)",
                    trailer.checkpoints, found.checkpoints
                ),
            );
        }
        if trailer.last_hash != found.last_hash {
            return self.fail(
                Some(until),
                "the trailer's lastHash is not the last record's hash",
            );
        }
        let mut canonical = render(&trailer_line(&trailer));
        canonical.pop();
        self.trailer = Some(trailer);
        Ok((Item::Trailer(trailer), canonical))
    }

    /// After the last line: the file must have ended with its trailer.
    pub fn finish(self) -> Result<Summary, VerifyError> {
        let Some(header) = self.header else {
            return Err(VerifyError {
                line: self.line,
                seq: None,
                reason: "the file is empty".into(),
            });
        };
        if self.trailer.is_none() {
            let after = self.next_seq - 1;
            return Err(VerifyError {
                line: self.line,
                seq: (after < header.until).then_some(after + 1),
                reason: format!(
                    "the file ends after seq {after} without its trailer line: it was cut short"
                ),
            });
        }
        Ok(Summary {
            header,
            records: self.records,
            checkpoints: self.checkpoints,
            last_signed_seq: self.last_signed_seq,
            head_hash: self.last_hash,
            key: self.key.map(|k| k.to_bytes()),
            key_source: self.key_source,
        })
    }
}

/// Names the readable field of a record line that differs from what its payload says.
fn differing_field(bytes: &[u8], record: &StoredRecord, envelope: &Envelope) -> String {
    let found: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let expected = serde_json::to_value(record_line(record, envelope)).unwrap_or_default();
    let field = [
        "time", "actor", "type", "event", "payload", "prevHash", "hash",
    ]
    .into_iter()
    .find(|field| found.get(field) != expected.get(field));
    match field {
        Some(field) => format!("the readable {field:?} is not what the stored payload says"),
        None => "the line was edited (extra fields or another encoding than the export's)".into(),
    }
}

/// Verifies a whole export from `input`, handing each verified line to `each` (which may stop
/// the walk with its own error, reported on that line).
pub fn verify_with(
    input: impl BufRead,
    pinned: Option<VerifyingKey>,
    mut each: impl FnMut(Item) -> Result<(), String>,
) -> Result<Summary, VerifyError> {
    let mut lines = Lines::new(input);
    let mut verifier = Verifier::new(pinned);
    while let Some(line) = lines.next_line() {
        let line = line?;
        let item = verifier.line(&line)?;
        let seq = match &item {
            Item::Record(record, _) => Some(record.seq),
            Item::Checkpoint(checkpoint) => Some(checkpoint.seq),
            _ => None,
        };
        each(item).map_err(|reason| VerifyError {
            line: verifier.line_number(),
            seq,
            reason,
        })?;
    }
    verifier.finish()
}

/// Verifies a whole export from `input`.
pub fn verify(input: impl BufRead, pinned: Option<VerifyingKey>) -> Result<Summary, VerifyError> {
    verify_with(input, pinned, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::UserId;
    use crate::core::Actor;
    use crate::store::record::encode_chain;
    use ed25519_dalek::SigningKey;

    fn records(n: u64) -> Vec<StoredRecord> {
        let envelopes: Vec<Envelope> = (1..=n)
            .map(|seq| Envelope {
                seq,
                at: Timestamp::from_unix_ms(1_767_225_600_000 + seq as i64 * 1000),
                actor: Actor::System,
                event: if seq == 1 {
                    Event::UserCreated {
                        id: UserId(1),
                        name: "ann".into(),
                        display_name: "Ann \"the admin\"".into(),
                        email: String::new(),
                    }
                } else {
                    Event::UserRenamed {
                        id: UserId(1),
                        name: format!("u{seq}"),
                    }
                },
            })
            .collect();
        encode_chain(&envelopes, Digest::default()).unwrap()
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    /// Records `since+1..=until` of a 10-record log, a checkpoint at 4 and 8.
    fn export(since: u64, until: u64) -> Vec<u8> {
        let all = records(10);
        let prev_hash = match since {
            0 => Digest::default(),
            s => all[s as usize - 1].hash(),
        };
        let header = Header {
            since,
            until,
            prev_hash,
            public_key: Some(key().verifying_key().to_bytes()),
            tool: "headscale-rs test".into(),
            exported_at: Timestamp::from_unix_ms(1_767_300_000_000),
        };
        let mut writer = Writer::new(Vec::new(), &header).unwrap();
        for record in &all[since as usize..until as usize] {
            writer.record(record).unwrap();
            if record.seq % 4 == 0 {
                let at = Timestamp::from_unix_ms(record.seq as i64);
                writer
                    .checkpoint(&Checkpoint::sign(&key(), record.seq, record.hash(), at))
                    .unwrap();
            }
        }
        writer.finish().unwrap().0
    }

    fn lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        let mut text = lines.join("\n");
        text.push('\n');
        text.into_bytes()
    }

    fn error(bytes: &[u8]) -> VerifyError {
        verify(bytes, None).unwrap_err()
    }

    #[test]
    fn an_export_verifies_and_reads_back_the_stored_bytes() {
        let bytes = export(0, 10);
        assert!(bytes.starts_with(MAGIC));
        let mut read = Vec::new();
        let summary = verify_with(&bytes[..], Some(key().verifying_key()), |item| {
            if let Item::Record(record, _) = item {
                read.push(record);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(read, records(10));
        assert_eq!(summary.records, 10);
        assert_eq!(summary.checkpoints, 2);
        assert_eq!(summary.last_signed_seq, Some(8));
        assert_eq!(summary.head_hash, records(10)[9].hash());
        assert_eq!(summary.key_source, KeySource::Pinned);
        let unpinned = verify(&bytes[..], None).unwrap();
        assert_eq!(unpinned.key_source, KeySource::File);
        // People and SIEMs read the event as the API shows it.
        let first: serde_json::Value = serde_json::from_str(&lines(&bytes)[1]).unwrap();
        assert_eq!(first["type"], "UserCreated");
        assert_eq!(first["event"]["name"], "ann");
        assert_eq!(first["actor"], "system");
    }

    #[test]
    fn a_partial_export_verifies_on_its_own() {
        let summary = verify(&export(3, 7)[..], None).unwrap();
        assert_eq!((summary.header.since, summary.header.until), (3, 7));
        assert_eq!(summary.records, 4);
        assert_eq!(summary.checkpoints, 1);
        let empty = verify(&export(10, 10)[..], None).unwrap();
        assert_eq!(empty.records, 0);
        assert_eq!(empty.head_hash, records(10)[9].hash());
    }

    #[test]
    fn tampering_names_the_first_bad_seq() {
        let good = lines(&export(0, 10));
        // Line 0 is the header, line n is record n up to 4; then the checkpoint at 4.
        let edit = |index: usize, from: &str, to: &str| {
            let mut lines = good.clone();
            assert!(lines[index].contains(from), "{}", lines[index]);
            lines[index] = lines[index].replacen(from, to, 1);
            error(&join(&lines))
        };
        let renamed = edit(3, "\"name\":\"u3\"", "\"name\":\"eve\"");
        assert_eq!(renamed.seq, Some(3));
        assert!(renamed.reason.contains("\"event\""), "{renamed}");
        let actor = edit(2, "\"actor\":\"system\"", "\"actor\":\"admin\"");
        assert_eq!(actor.seq, Some(2));
        assert!(actor.reason.contains("\"actor\""), "{actor}");
        let added = edit(2, "\"schema\"", "\"note\":\"hi\",\"schema\"");
        assert_eq!(added.seq, Some(2));
        // A flipped payload byte.
        let mut flipped = good.clone();
        let at = flipped[2].find("\"payload\":\"").unwrap() + 12;
        let mut bytes = flipped[2].clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        flipped[2] = String::from_utf8(bytes).unwrap();
        let flipped = error(&join(&flipped));
        assert_eq!(flipped.seq, Some(2));
        assert!(flipped.reason.contains("hash"), "{flipped}");
        // A deleted record, two swapped, a deleted checkpoint.
        let mut deleted = good.clone();
        deleted.remove(6);
        assert_eq!(error(&join(&deleted)).seq, Some(5));
        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert_eq!(error(&join(&swapped)).seq, Some(2));
        let mut no_checkpoint = good.clone();
        no_checkpoint.remove(5);
        assert!(error(&join(&no_checkpoint)).reason.contains("checkpoints"));
        // A forged checkpoint signature.
        let mut forged = good.clone();
        let signature = forged[5].find("\"signature\":\"").unwrap() + 13;
        let mut bytes = forged[5].clone().into_bytes();
        bytes[signature] = if bytes[signature] == b'0' { b'1' } else { b'0' };
        forged[5] = String::from_utf8(bytes).unwrap();
        let forged = error(&join(&forged));
        assert_eq!(forged.seq, Some(4));
        assert!(forged.reason.contains("signature"), "{forged}");
    }

    #[test]
    fn truncation_is_detected() {
        let good = export(0, 10);
        let all = lines(&good);
        // Cut after record 6: no trailer.
        let cut = error(&join(&all[..8]));
        assert_eq!(cut.seq, Some(7));
        assert!(cut.reason.contains("cut short"), "{cut}");
        // Cut mid-line.
        let mid = error(&good[..good.len() / 2]);
        assert!(mid.reason.contains("line end"), "{mid}");
        // The trailer alone, records missing before it.
        let mut early = all[..8].to_vec();
        early.push(all.last().unwrap().clone());
        assert_eq!(error(&join(&early)).seq, Some(7));
        assert!(error(b"").reason.contains("empty"));
        // A range no log can have (and no overflow on the way).
        let mut huge = lines(&export(10, 10));
        huge[0] = huge[0].replace(
            "\"since\":10,\"until\":10",
            "\"since\":18446744073709551615,\"until\":18446744073709551615",
        );
        assert!(error(&join(&huge)).reason.contains("no log has the range"));
        assert!(error(b"HSEVLOG1\n").reason.contains("header"));
    }

    #[test]
    fn keys_pinned_and_from_the_file() {
        let bytes = export(0, 10);
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let wrong = verify(&bytes[..], Some(other)).unwrap_err();
        assert_eq!(wrong.line, 1);
        assert!(wrong.reason.contains("pinned key"), "{wrong}");
        // A file without a key: its checkpoints cannot be checked unless a key is given.
        let mut all = lines(&bytes);
        let key_hex = hex::encode(key().verifying_key().to_bytes());
        all[0] = all[0].replace(&format!("\"{key_hex}\""), "null");
        let without = join(&all);
        let refused = verify(&without[..], None).unwrap_err();
        assert_eq!(refused.seq, Some(4));
        assert!(refused.reason.contains("--key"), "{refused}");
        assert!(verify(&without[..], Some(key().verifying_key())).is_ok());
    }

    #[test]
    fn lines_over_the_limit_are_refused_naming_the_line() {
        let mut bytes = export(0, 1);
        bytes.extend(vec![b'x'; MAX_LINE_LEN + 10]);
        let long = error(&bytes);
        assert_eq!(long.line, 4);
        assert!(long.reason.contains("limit"), "{long}");
    }

    #[test]
    fn the_writer_refuses_a_broken_chain() {
        let all = records(3);
        let header = Header {
            since: 0,
            until: 3,
            prev_hash: Digest::default(),
            public_key: None,
            tool: String::new(),
            exported_at: Timestamp(0),
        };
        let mut writer = Writer::new(Vec::new(), &header).unwrap();
        writer.record(&all[0]).unwrap();
        assert!(writer.record(&all[2]).is_err());
        writer.record(&all[1]).unwrap();
        assert!(writer.finish().is_err());
    }
}
