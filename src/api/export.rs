//! `GET /api/v1/events/export`: the log (or a range of it) as the verifiable JSON lines of
//! `store::jsonl_export`, streamed. Served by a running daemon (whose store nobody else may
//! open) and by the CLI's in-process router alike, so `headscale events export` works online
//! and offline with one code path.

use super::history::FOLLOW_CHUNK;
use super::{blocking, point, ApiContext, ApiError};
use crate::core::keys::Digest;
use crate::store::jsonl_export::{Header, Writer};
use crate::store::{Checkpoint, EventStore};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A chunk of the stream stops growing past this many bytes (or [`FOLLOW_CHUNK`] records),
/// so the server holds at most about one chunk per export, whatever the log's length.
pub const EXPORT_CHUNK_BYTES: usize = 4 << 20;

/// The media type of the answer: one JSON document per line.
pub const NDJSON: &str = "application/x-ndjson";

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Export the records after this point (default: from the first): a seq, an RFC 3339
    /// time or a duration ago (`2h`).
    since: Option<String>,
    /// Export up to this point (default: the head when the request arrives).
    until: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/events/export",
    tag = "history",
    operation_id = "exportEvents",
    summary = "The log as verifiable JSON lines: a header (range, starting chain hash, checkpoint key), each record with its stored payload and chain hash, the signed checkpoints, a trailer",
    params(ExportQuery),
    responses((status = 200, description = "Success (application/x-ndjson, streamed)", content_type = "application/x-ndjson", body = String), super::openapi::CommonErrors)
)]
pub async fn export_events(
    State(ctx): State<ApiContext>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    // A running server signs its head first, so the export's last records are vouched for by
    // a signature and not only by the chain (a failure just leaves the periodic checkpoints).
    if let super::Backend::Live(engine) = &ctx.backend {
        if let Err(error) = engine.checkpoint_now().await {
            tracing::warn!(%error, "no checkpoint signed before the export");
        }
    }
    let store = ctx.store();
    let now = ctx.now();
    let key = ctx.checkpoint_key;
    let (since, until) = (query.since, query.until);
    let (header, checkpoints) = {
        let store = store.clone();
        blocking(move || {
            let since = point::resolve_optional(store.as_ref(), "since", since.as_deref(), now)?
                .unwrap_or(0);
            let until = point::resolve_optional(store.as_ref(), "until", until.as_deref(), now)?
                .unwrap_or_else(|| store.head().seq);
            if since > until {
                return Err(ApiError::BadRequest(format!(
                    "since ({since}) is after until ({until})"
                )));
            }
            let prev_hash = match since {
                0 => Digest::default(),
                seq => store
                    .read(seq)?
                    .ok_or_else(|| ApiError::Internal(format!("record {seq} is missing")))?
                    .hash(),
            };
            let mut in_range: BTreeMap<u64, Vec<Checkpoint>> = BTreeMap::new();
            for checkpoint in store.checkpoints()? {
                if checkpoint.seq > since && checkpoint.seq <= until {
                    in_range.entry(checkpoint.seq).or_default().push(checkpoint);
                }
            }
            // Without the key file (an offline reader that may not read it) the checkpoints
            // name their key; the verifier then says it was not pinned.
            let public_key = key.map(|k| k.to_bytes()).or_else(|| {
                in_range
                    .values()
                    .flatten()
                    .next_back()
                    .map(|c| c.public_key)
            });
            let header = Header {
                since,
                until,
                prev_hash,
                public_key,
                // The package version directly: `api` does not reach into `server` (review P4).
                tool: concat!("headscale-rs ", env!("CARGO_PKG_VERSION")).to_string(),
                exported_at: now,
            };
            Ok((header, in_range))
        })
        .await?
    };
    let writer =
        Writer::new(Vec::new(), &header).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cursor = Cursor {
        store,
        checkpoints: Arc::new(checkpoints),
        next: header.since + 1,
        until: header.until,
        writer: Some(writer),
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        let writer = cursor.writer.take()?;
        let (store, checkpoints, next, until) = (
            cursor.store.clone(),
            cursor.checkpoints.clone(),
            cursor.next,
            cursor.until,
        );
        let chunk = tokio::task::spawn_blocking(move || {
            write_chunk(store.as_ref(), &checkpoints, writer, next, until)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|chunk| chunk);
        match chunk {
            Ok((bytes, writer, next)) => {
                cursor.writer = writer;
                cursor.next = next;
                Some((Ok(bytes::Bytes::from(bytes)), cursor))
            }
            // The stream breaks off without its trailer: the reader sees it was cut short.
            Err(error) => {
                tracing::warn!(%error, "events export stopped");
                Some((Err(std::io::Error::other(error)), cursor))
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, NDJSON)],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

struct Cursor {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<BTreeMap<u64, Vec<Checkpoint>>>,
    /// The next seq to write.
    next: u64,
    until: u64,
    /// `None` once the trailer was written (or the stream failed).
    writer: Option<Writer<Vec<u8>>>,
}

/// Writes the records from `next` on until the chunk is full, then hands back the bytes, the
/// writer (none once the trailer is written) and the next seq.
type Chunk = (Vec<u8>, Option<Writer<Vec<u8>>>, u64);

fn write_chunk(
    store: &dyn EventStore,
    checkpoints: &BTreeMap<u64, Vec<Checkpoint>>,
    mut writer: Writer<Vec<u8>>,
    mut next: u64,
    until: u64,
) -> Result<Chunk, String> {
    let to = until.min(next.saturating_add(FOLLOW_CHUNK - 1));
    if next <= to {
        for record in store.read_range(next, to) {
            let record = record.map_err(|e| e.to_string())?;
            writer.record(&record).map_err(|e| e.to_string())?;
            for checkpoint in checkpoints.get(&record.seq).into_iter().flatten() {
                writer.checkpoint(checkpoint).map_err(|e| e.to_string())?;
            }
            next = record.seq + 1;
            if writer.get_mut().len() >= EXPORT_CHUNK_BYTES {
                break;
            }
        }
    }
    if next <= until {
        if next <= to && writer.get_mut().len() < EXPORT_CHUNK_BYTES {
            return Err(format!("the log ends before record {next}"));
        }
        let bytes = std::mem::take(writer.get_mut());
        return Ok((bytes, Some(writer), next));
    }
    let (bytes, _) = writer.finish().map_err(|e| e.to_string())?;
    Ok((bytes, None, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::UserId;
    use crate::core::{Actor, Envelope, Event, Timestamp};
    use crate::store::jsonl_export::verify;
    use crate::store::memory::MemoryStore;
    use crate::store::record::encode_chain;

    #[test]
    fn chunks_hold_at_most_a_chunk_and_verify_end_to_end() {
        let total = 2 * FOLLOW_CHUNK + 5;
        let envelopes: Vec<Envelope> = (1..=total)
            .map(|seq| Envelope {
                seq,
                at: Timestamp::from_unix_ms(seq as i64),
                actor: Actor::System,
                event: Event::UserRenamed {
                    id: UserId(1),
                    name: format!("u{seq}"),
                },
            })
            .collect();
        let store = MemoryStore::new();
        store
            .append(&encode_chain(&envelopes, Digest::default()).unwrap())
            .unwrap();
        let since = 3;
        let header = Header {
            since,
            until: total,
            prev_hash: store.read(since).unwrap().unwrap().hash(),
            public_key: None,
            tool: "test".into(),
            exported_at: Timestamp(0),
        };
        let mut writer = Some(Writer::new(Vec::new(), &header).unwrap());
        let (mut file, mut next, mut chunks) = (Vec::new(), since + 1, 0);
        while let Some(current) = writer.take() {
            let (bytes, rest, after) =
                write_chunk(&store, &BTreeMap::new(), current, next, total).unwrap();
            assert!(after - next <= FOLLOW_CHUNK);
            file.extend(bytes);
            (writer, next, chunks) = (rest, after, chunks + 1);
        }
        assert_eq!(chunks, 3);
        let summary = verify(&file[..], None).unwrap();
        assert_eq!(summary.records, total - since);
        assert_eq!(summary.head_hash, store.head().hash);
    }
}
