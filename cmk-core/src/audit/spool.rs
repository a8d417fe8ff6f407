//! The durable spool: security events on disk, in order, until their sink takes them.
//!
//! A directory of segment files (`seg-<n>.jsonl`, one JSON event per line) and a cursor
//! (`cursor`: the segment and byte offset of the first event not yet delivered, replaced
//! atomically). Appends go to the last segment; delivery reads from the cursor and moves it
//! on, deleting segments it has passed. A process killed at any point leaves a spool the
//! next process opens: a torn last line is cut off (it was never acknowledged: a durable
//! append returns only after `fsync`), and events after the cursor are delivered again if
//! their delivery was not recorded (at-least-once; receivers de-duplicate by event id).
//!
//! One process per spool directory: `open` takes an exclusive lock on `LOCK`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::format::{json_line, parse_json_line};
use crate::audit::event::SecurityEvent;

/// Size at which appends start a new segment.
const SEGMENT_BYTES: u64 = 4 << 20;

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool reached its size cap: the first `written` events were appended, the rest
    /// were not.
    #[error("the audit spool is full ({cap} bytes)")]
    Full {
        /// The cap.
        cap: u64,
        /// How many of the events were appended.
        written: usize,
    },
    /// The disk refused (full, read-only, gone).
    #[error("the audit spool cannot be written: {0}")]
    Io(#[from] io::Error),
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    seq: u64,
    offset: u64,
}

struct Inner {
    writer: File,
    write: Position,
    read: Position,
    /// Bytes in the segment files (delivered bytes of the first segment included).
    total: u64,
}

/// The spool of one delivery pipeline.
pub struct Spool {
    dir: PathBuf,
    cap: u64,
    inner: Mutex<Inner>,
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// Options for the spool's files: owner-only on Unix (events name tenants, actors and
/// records; never values, but still not for every local user).
fn private() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.jsonl"))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
        {
            seqs.push(n);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let (seq, offset) = text.trim().split_once(' ')?;
    Some(Position {
        seq: seq.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

/// The events a spool holds that its sink has not taken yet (those after its cursor), read
/// without the spool's lock, for an operator's tool beside the process that owns it: a line
/// still being appended is left out, and a segment the owner deletes meanwhile (delivered) is
/// skipped. A spool that does not exist holds none.
///
/// # Errors
/// An I/O error when the directory or a segment cannot be read.
pub fn undelivered(dir: &Path) -> io::Result<Vec<SecurityEvent>> {
    let seqs = match segments(dir) {
        Ok(seqs) => seqs,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let cursor = read_cursor(dir);
    let mut out = Vec::new();
    for seq in seqs {
        let start = match cursor {
            Some(c) if seq < c.seq => continue,
            Some(c) if seq == c.seq => c.offset,
            _ => 0,
        };
        let bytes = match fs::read(segment_path(dir, seq)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let body = usize::try_from(start)
            .ok()
            .and_then(|start| bytes.get(start..))
            .unwrap_or_default();
        for line in body.split_inclusive(|&b| b == b'\n') {
            match line.strip_suffix(b"\n") {
                Some(line) => out.extend(parse_json_line(line)),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Cuts a torn last line (a write a crash interrupted) off the end of a segment.
fn trim_torn_tail(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
    if keep < bytes.len() as u64 {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(keep)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `cap` bytes.
    ///
    /// # Errors
    /// An [`io::Error`] when the directory cannot be created, read or synced, the lock file or
    /// a segment cannot be opened, removed or trimmed, or another process holds the spool
    /// ([`io::ErrorKind::WouldBlock`]). An unreadable cursor is not an error: replay starts at
    /// the first segment.
    pub fn open(dir: impl Into<PathBuf>, cap: u64) -> io::Result<Spool> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let lock = private()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("another process holds the audit spool {}", dir.display()),
            )
        })?;
        let mut seqs = segments(&dir)?;
        let mut read = read_cursor(&dir).unwrap_or(Position {
            seq: seqs.first().copied().unwrap_or(1),
            offset: 0,
        });
        // Segments before the cursor were delivered.
        for &seq in seqs.iter().filter(|&&s| s < read.seq) {
            fs::remove_file(segment_path(&dir, seq))?;
        }
        seqs.retain(|&s| s >= read.seq);
        if seqs.is_empty() {
            read = Position {
                seq: read.seq.max(1),
                offset: 0,
            };
            seqs.push(read.seq);
        }
        let last = *seqs.last().unwrap_or(&read.seq);
        let last_len = if segment_path(&dir, last).exists() {
            trim_torn_tail(&segment_path(&dir, last))?
        } else {
            0
        };
        let writer = private()
            .create(true)
            .append(true)
            .open(segment_path(&dir, last))?;
        let mut total = 0;
        for &seq in &seqs {
            total += fs::metadata(segment_path(&dir, seq)).map_or(0, |m| m.len());
        }
        sync_dir(&dir)?;
        Ok(Spool {
            cap,
            inner: Mutex::new(Inner {
                writer,
                write: Position {
                    seq: last,
                    offset: last_len,
                },
                read,
                total,
            }),
            dir,
            _lock: lock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the files inconsistent (every step
        // re-reads them), so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends events in order; with `sync`, returns only once they are on disk. At the
    /// size cap it appends the events that fit and reports the rest ([`SpoolError::Full`]).
    ///
    /// # Errors
    /// [`SpoolError::Full`] when the cap leaves no room for every event (`written` says how
    /// many went in); [`SpoolError::Io`] when a new segment cannot be created or the write or
    /// `fsync` fails, in which case none of the events were appended.
    pub fn append(&self, events: &[SecurityEvent], sync: bool) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        let mut inner = self.lock();
        let room = self.cap.saturating_sub(inner.total);
        let mut written = 0;
        for e in events {
            let before = buf.len();
            json_line(e, &mut buf);
            if buf.len() as u64 > room {
                buf.truncate(before);
                break;
            }
            written += 1;
        }
        let full = written < events.len();
        if buf.is_empty() {
            return Err(SpoolError::Full {
                cap: self.cap,
                written: 0,
            });
        }
        let len = buf.len() as u64;
        if inner.write.offset > 0 && inner.write.offset + len > SEGMENT_BYTES {
            let seq = inner.write.seq + 1;
            let file = private()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            sync_dir(&self.dir)?;
            inner.writer = file;
            inner.write = Position { seq, offset: 0 };
        }
        if let Err(e) = inner.writer.write_all(&buf).and_then(|()| {
            if sync {
                inner.writer.sync_data()
            } else {
                Ok(())
            }
        }) {
            // Take back a partial write, so the file still ends at a line boundary.
            let _ = inner.writer.set_len(inner.write.offset);
            return Err(e.into());
        }
        inner.write.offset += len;
        inner.total += len;
        if full {
            return Err(SpoolError::Full {
                cap: self.cap,
                written,
            });
        }
        Ok(())
    }

    /// Whether events wait for delivery.
    pub fn pending(&self) -> bool {
        let inner = self.lock();
        inner.read < inner.write
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }

    /// Up to `max` undelivered events, oldest first, and the position after them (pass it to
    /// [`Spool::commit`] once they are delivered). Lines that do not parse (a corrupted
    /// disk) are skipped and counted in the third value.
    ///
    /// # Errors
    /// An [`io::Error`] when a segment cannot be opened, measured or read.
    pub fn peek(&self, max: usize) -> io::Result<(Vec<SecurityEvent>, Position, usize)> {
        let inner = self.lock();
        let mut at = inner.read;
        let mut out = Vec::new();
        let mut bad = 0;
        while out.len() < max && at < inner.write {
            let end = if at.seq == inner.write.seq {
                inner.write.offset
            } else {
                fs::metadata(segment_path(&self.dir, at.seq))?.len()
            };
            if at.offset >= end {
                if at.seq >= inner.write.seq {
                    break;
                }
                at = Position {
                    seq: at.seq + 1,
                    offset: 0,
                };
                continue;
            }
            let mut file = File::open(segment_path(&self.dir, at.seq))?;
            file.seek(SeekFrom::Start(at.offset))?;
            let mut reader = BufReader::new(file.take(end - at.offset));
            let mut line = Vec::new();
            while out.len() < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                at.offset += n as u64;
                match parse_json_line(&line) {
                    Some(e) => out.push(e),
                    None => bad += 1,
                }
            }
        }
        Ok((out, at, bad))
    }

    /// Records that everything before `to` is delivered: the cursor moves (atomically) and
    /// segments it has passed are deleted.
    ///
    /// # Errors
    /// An [`io::Error`] when the new cursor cannot be written, synced or renamed into place, or
    /// the next segment cannot be created. Segments that cannot be deleted are left and not
    /// reported.
    pub fn commit(&self, to: Position) -> io::Result<()> {
        let mut inner = self.lock();
        if to <= inner.read {
            return Ok(());
        }
        let tmp = self.dir.join("cursor.tmp");
        {
            let mut f = private()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&tmp)?;
            writeln!(f, "{} {}", to.seq, to.offset)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join("cursor"))?;
        for seq in inner.read.seq..to.seq {
            let path = segment_path(&self.dir, seq);
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if fs::remove_file(&path).is_ok() {
                inner.total = inner.total.saturating_sub(len);
            }
        }
        inner.read = to;
        // Fully delivered: start the file over, so an idle spool holds no bytes.
        if inner.read == inner.write && inner.write.offset > 0 {
            let seq = inner.write.seq + 1;
            let file = private()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            let old = segment_path(&self.dir, inner.write.seq);
            inner.writer = file;
            inner.write = Position { seq, offset: 0 };
            inner.read = inner.write;
            let tmp = self.dir.join("cursor.tmp");
            {
                let mut f = private()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&tmp)?;
                writeln!(f, "{} 0", seq)?;
                f.sync_data()?;
            }
            fs::rename(&tmp, self.dir.join("cursor"))?;
            let len = fs::metadata(&old).map_or(0, |m| m.len());
            if fs::remove_file(&old).is_ok() {
                inner.total = inner.total.saturating_sub(len);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventName, Outcome};
    use crate::tenant::context::{RequestContext, TenantId};

    fn events(n: usize) -> Vec<SecurityEvent> {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap());
        (0..n)
            .map(|_| SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success))
            .collect()
    }

    #[test]
    fn undelivered_events_are_read_beside_the_owner_without_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(undelivered(&dir.path().join("none")).unwrap().is_empty());
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&events(5), true).unwrap();
        let (peeked, to, _) = spool.peek(2).unwrap();
        spool.commit(to).unwrap();
        // The owner still holds the lock; the reader sees the three after the cursor.
        let pending = undelivered(dir.path()).unwrap();
        assert_eq!(pending.len(), 3);
        assert_ne!(pending[0].id, peeked[0].id);
        assert_ne!(pending[0].id, peeked[1].id);
        // A line being appended (no newline yet) is left out.
        let last = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), last))
            .unwrap();
        f.write_all(b"{\"schema\":\"cmk.sec").unwrap();
        assert_eq!(undelivered(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn events_come_back_in_order_across_reopen_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let sent = events(10);
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.append(&sent[..4], true).unwrap();
            spool.append(&sent[4..], false).unwrap();
            let (first, at, bad) = spool.peek(3).unwrap();
            assert_eq!((first.as_slice(), bad), (&sent[..3], 0));
            spool.commit(at).unwrap();
            // A second process cannot open it meanwhile.
            assert!(Spool::open(dir.path(), 1 << 20).is_err());
        }
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.pending());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in fs::read_dir(dir.path()).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "spool files are the owner's only");
            }
        }
        let (rest, at, _) = spool.peek(100).unwrap();
        assert_eq!(rest.as_slice(), &sent[3..]);
        spool.commit(at).unwrap();
        assert!(!spool.pending());
        assert_eq!(spool.bytes(), 0, "a delivered spool holds nothing");
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_full_spool_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let sent = events(3);
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.append(&sent, true).unwrap();
        }
        // A crash in the middle of a write.
        let seg = segments(dir.path()).unwrap()[0];
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), seg))
            .unwrap();
        f.write_all(b"{\"id\":\"00").unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (back, _, bad) = spool.peek(10).unwrap();
        assert_eq!((back, bad), (sent.clone(), 0));
        // The cap counts bytes on disk.
        let small = tempfile::tempdir().unwrap();
        let spool = Spool::open(small.path(), 600).unwrap();
        spool.append(&sent[..1], false).unwrap();
        assert!(matches!(
            spool.append(&sent[1..], false),
            Err(SpoolError::Full {
                cap: 600,
                written: 0
            })
        ));
    }

    #[test]
    fn segments_roll_over_and_are_deleted_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 << 20).unwrap();
        let batch = events(2_000);
        let mut sent = 0;
        while segments(dir.path()).unwrap().len() < 2 {
            spool.append(&batch, false).unwrap();
            sent += batch.len();
        }
        let mut n = 0;
        loop {
            let (got, at, _) = spool.peek(5_000).unwrap();
            if got.is_empty() {
                break;
            }
            n += got.len();
            spool.commit(at).unwrap();
        }
        assert_eq!(n, sent);
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        assert_eq!(spool.bytes(), 0);
    }
}
