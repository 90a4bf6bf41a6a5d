//! A fault-injecting `LogFile` for tests (audit test plan B1): an in-memory file that keeps
//! apart what reads see (the page cache) and what would survive a power loss (synced bytes),
//! and fails chosen operations: the Nth write, fsync, truncate or read (once, or until
//! cleared),
//! ENOSPC after a byte budget (with a partial write), and an fsync that fails once and
//! drops the dirty pages ("fsyncgate": reads still show them, the disk never gets them).

use super::segment_log::{LogFile, LogFileOpener};
use std::io::Error;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// The operations that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write,
    Sync,
    SetLen,
    Read,
}

/// What to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The `nth` call (1-based, counted since the disk was made) of `op` fails with EIO;
    /// with `sticky`, every later one too until `clear`.
    Fail { op: Op, nth: u64, sticky: bool },
    /// The `nth` fsync fails once and the pages it should have written are lost.
    FsyncGate { nth: u64 },
}

#[derive(Default)]
struct Model {
    /// What reads see.
    current: Vec<u8>,
    /// What a power loss leaves.
    synced: Vec<u8>,
    /// Written since the last sync.
    dirty: Vec<Range<usize>>,
    /// Dropped by a failed fsync: never reach `synced` unless written again.
    lost: Vec<Range<usize>>,
    calls: [u64; 4],
    faults: Vec<Fault>,
    /// ENOSPC once the file would grow past this many bytes.
    capacity: Option<usize>,
    injected: u64,
}

fn index(op: Op) -> usize {
    match op {
        Op::Write => 0,
        Op::Sync => 1,
        Op::SetLen => 2,
        Op::Read => 3,
    }
}

fn clip(ranges: &mut Vec<Range<usize>>, len: usize) {
    ranges.retain_mut(|r| {
        r.end = r.end.min(len);
        r.start < r.end
    });
}

impl Model {
    /// Counts the call and says whether it must fail (and how).
    fn call(&mut self, op: Op) -> Option<Fault> {
        let i = index(op);
        self.calls[i] += 1;
        let n = self.calls[i];
        let hit = self.faults.iter().copied().find(|fault| match *fault {
            Fault::Fail { op: f, nth, sticky } => f == op && (n == nth || (sticky && n >= nth)),
            Fault::FsyncGate { nth } => op == Op::Sync && n == nth,
        });
        if hit.is_some() {
            self.injected += 1;
        }
        hit
    }
}

/// One simulated file, shared by every handle opened on it.
#[derive(Clone, Default)]
pub struct FaultyDisk {
    model: Arc<Mutex<Model>>,
}

fn eio(what: &str) -> Error {
    Error::other(format!("injected I/O error ({what})"))
}

impl FaultyDisk {
    pub fn new() -> FaultyDisk {
        FaultyDisk::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens new handles on this file (what `SegmentLog` calls at open and on each rescan).
    pub fn opener(&self) -> LogFileOpener {
        let disk = self.clone();
        Arc::new(move || Ok(Arc::new(disk.clone()) as Arc<dyn LogFile>))
    }

    /// Adds a fault (several may be armed at once).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Stops injecting (and lifts the ENOSPC budget).
    pub fn clear(&self) {
        let mut model = self.lock();
        model.faults.clear();
        model.capacity = None;
    }

    /// The file cannot grow past `bytes` (ENOSPC, after a partial write).
    pub fn set_capacity(&self, bytes: Option<usize>) {
        self.lock().capacity = bytes;
    }

    /// Calls so far: (writes, fsyncs, truncates).
    pub fn calls(&self) -> (u64, u64, u64) {
        let m = self.lock();
        (m.calls[0], m.calls[1], m.calls[2])
    }

    /// Faults injected so far (ENOSPC refusals included).
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// A power loss: only synced bytes remain.
    pub fn crash(&self) {
        let mut m = self.lock();
        m.current = m.synced.clone();
        m.dirty.clear();
        m.lost.clear();
    }

    /// The bytes that reads see.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().current.clone()
    }
}

impl LogFile for FaultyDisk {
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        let mut m = self.lock();
        if m.call(Op::Write).is_some() {
            return Err(eio("write"));
        }
        let offset = offset as usize;
        let mut n = buf.len();
        if let Some(capacity) = m.capacity {
            let room = capacity.saturating_sub(offset);
            if room == 0 {
                m.injected += 1;
                return Err(Error::from_raw_os_error(28)); // ENOSPC
            }
            n = n.min(room);
        }
        if m.current.len() < offset + n {
            m.current.resize(offset + n, 0);
        }
        m.current[offset..offset + n].copy_from_slice(&buf[..n]);
        m.dirty.push(offset..offset + n);
        // Rewritten bytes are dirty again, no longer lost.
        m.lost.retain(|r| r.end <= offset || r.start >= offset + n);
        Ok(n)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut m = self.lock();
        if let Some(fault) = m.call(Op::Sync) {
            if let Fault::FsyncGate { .. } = fault {
                let dirty = std::mem::take(&mut m.dirty);
                m.lost.extend(dirty);
            }
            return Err(eio("fsync"));
        }
        let current = m.current.clone();
        let old = std::mem::replace(&mut m.synced, current);
        for r in m.lost.clone() {
            for i in r {
                m.synced[i] = old.get(i).copied().unwrap_or(0);
            }
        }
        m.dirty.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut m = self.lock();
        if m.call(Op::SetLen).is_some() {
            return Err(eio("truncate"));
        }
        let len = len as usize;
        m.current.resize(len, 0);
        clip(&mut m.dirty, len);
        clip(&mut m.lost, len);
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut m = self.lock();
        if m.call(Op::Read).is_some() {
            return Err(eio("read"));
        }
        let offset = (offset as usize).min(m.current.len());
        let n = buf.len().min(m.current.len() - offset);
        buf[..n].copy_from_slice(&m.current[offset..offset + n]);
        Ok(n)
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.lock().current.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsyncgate_drops_the_dirty_pages_but_reads_still_show_them() {
        let disk = FaultyDisk::new();
        disk.write_at(b"abc", 0).unwrap();
        disk.sync_data().unwrap();
        disk.inject(Fault::FsyncGate { nth: 2 });
        disk.write_at(b"def", 3).unwrap();
        assert!(disk.sync_data().is_err());
        disk.sync_data().unwrap();
        assert_eq!(disk.contents(), b"abcdef");
        disk.crash();
        assert_eq!(
            disk.contents(),
            b"abc\0\0\0",
            "the lost pages never reached the disk"
        );
    }

    #[test]
    fn enospc_writes_part_then_refuses() {
        let disk = FaultyDisk::new();
        disk.set_capacity(Some(4));
        assert_eq!(disk.write_at(b"abcdef", 0).unwrap(), 4);
        let error = disk.write_at(b"ef", 4).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        disk.clear();
        assert_eq!(disk.write_at(b"ef", 4).unwrap(), 2);
    }
}
