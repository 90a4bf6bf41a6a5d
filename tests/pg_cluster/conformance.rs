//! What every durable `EventStore` must do, as one scenario over a fresh, empty store that can
//! be reopened: the hash chain and gap-free seqs enforced on append, reads and ranges,
//! snapshots (newest at or before, removal from a seq), signed checkpoints, `recover` and
//! `probe` when nothing failed, and everything still there after a reopen. Run against the
//! embedded store (the reference) and PostgreSQL by `tests/postgres_store.rs`.

use headscale::core::event::{Actor, Event};
use headscale::core::ids::UserId;
use headscale::core::keys::Digest;
use headscale::core::{Envelope, Timestamp};
use headscale::store::record::encode_chain;
use headscale::store::{Checkpoint, EventStore, Head, StoreError, StoredRecord};
use std::sync::Arc;

/// Records `first..first + count`, chained from `prev`: a user, then renames of it.
pub fn records(first: u64, count: u64, prev: Digest) -> Vec<StoredRecord> {
    let envelopes: Vec<Envelope> = (first..first + count)
        .map(|seq| Envelope {
            seq,
            at: Timestamp::from_unix_ms(1_767_225_600_000 + seq as i64),
            actor: Actor::System,
            event: if seq == 1 {
                Event::UserCreated {
                    id: UserId(1),
                    name: "ann".into(),
                    display_name: String::new(),
                    email: String::new(),
                }
            } else {
                Event::UserRenamed {
                    id: UserId(1),
                    name: format!("ann-{seq}"),
                }
            },
        })
        .collect();
    encode_chain(&envelopes, prev).unwrap()
}

fn all(store: &dyn EventStore) -> Vec<StoredRecord> {
    store
        .read_range(1, u64::MAX)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The whole scenario; `open` opens the same store each time (the previous handle is dropped
/// first).
pub fn run(open: &dyn Fn() -> Arc<dyn EventStore>) {
    let store = open();

    // Empty.
    assert_eq!(store.head(), Head::default());
    assert!(store.read(1).unwrap().is_none());
    assert!(all(store.as_ref()).is_empty());
    assert!(store.snapshot_at_or_before(u64::MAX).unwrap().is_none());
    assert!(store.checkpoints().unwrap().is_empty());
    store.probe().unwrap();

    // Three group commits.
    let mut log = records(1, 5, Digest::default());
    log.extend(records(6, 1, log[4].hash()));
    log.extend(records(7, 294, log[5].hash()));
    store.append(&log[..5]).unwrap();
    store.append(&log[5..6]).unwrap();
    store.append(&log[6..]).unwrap();
    store.append(&[]).unwrap();
    let head = Head {
        seq: 300,
        hash: log[299].hash(),
    };
    assert_eq!(store.head(), head);
    assert_eq!(store.read(1).unwrap().as_ref(), Some(&log[0]));
    assert_eq!(store.read(300).unwrap().as_ref(), Some(&log[299]));
    assert!(store.read(301).unwrap().is_none());
    assert_eq!(all(store.as_ref()), log);
    let some: Vec<_> = store.read_range(290, 295).map(Result::unwrap).collect();
    assert_eq!(some, log[289..295]);
    let from_zero: Vec<_> = store.read_range(0, 3).map(Result::unwrap).collect();
    assert_eq!(from_zero, log[..3]);
    assert_eq!(store.read_range(5, 4).count(), 0);

    // Refused appends change nothing.
    let next = records(301, 2, head.hash);
    let refused = |error: StoreError| {
        assert!(
            matches!(
                error,
                StoreError::OutOfOrder { .. } | StoreError::ChainBroken { .. }
            ),
            "{error}"
        )
    };
    refused(store.append(&next[1..]).unwrap_err());
    refused(store.append(&log[299..]).unwrap_err());
    let forked = records(301, 1, Digest([7; 32]));
    let broken = store.append(&forked).unwrap_err();
    assert!(
        matches!(broken, StoreError::ChainBroken { seq: 301, .. }),
        "{broken}"
    );
    assert_eq!(store.head(), head);
    store.recover().unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(all(store.as_ref()).len(), 300);

    // Snapshots: the newest at or before a seq; removal from a seq on.
    for seq in [10u64, 20, 30, 40] {
        store
            .put_snapshot(seq, format!("snapshot {seq}").as_bytes())
            .unwrap();
    }
    let at = |seq| store.snapshot_at_or_before(seq).unwrap();
    assert_eq!(at(25), Some((20, b"snapshot 20".to_vec())));
    assert_eq!(at(u64::MAX), Some((40, b"snapshot 40".to_vec())));
    assert_eq!(at(5), None);
    store.remove_snapshots_from(30).unwrap();
    assert_eq!(at(u64::MAX), Some((20, b"snapshot 20".to_vec())));

    // Checkpoints, in seq order.
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let late = Checkpoint::sign(&key, 300, head.hash, Timestamp::from_unix_ms(2));
    let early = Checkpoint::sign(&key, 5, log[4].hash(), Timestamp::from_unix_ms(1));
    store.put_checkpoint(&late).unwrap();
    store.put_checkpoint(&early).unwrap();
    assert_eq!(
        store.checkpoints().unwrap(),
        vec![early.clone(), late.clone()]
    );
    store.probe().unwrap();
    drop(store);

    // Reopened: all of it is still there, and the chain goes on.
    let store = open();
    assert_eq!(store.head(), head);
    assert_eq!(all(store.as_ref()), log);
    assert_eq!(store.checkpoints().unwrap(), vec![early, late]);
    assert_eq!(
        store.snapshot_at_or_before(u64::MAX).unwrap(),
        Some((20, b"snapshot 20".to_vec()))
    );
    store.append(&next).unwrap();
    assert_eq!(store.head().seq, 302);
    assert_eq!(store.read(302).unwrap().as_ref(), Some(&next[1]));
}
