//! The prewarmer: one background thread that prepares freshly reserved
//! (still zero) ranges of active segments ahead of the writer.
//!
//! It populates the range's page-table entries writable
//! (`MADV_POPULATE_WRITE`, Linux 5.14+): the kernel allocates the page-cache
//! pages and does its per-page filesystem work (ext4's block mapping) here,
//! on another core, so the writer's later stores into the map are plain
//! memory copies with no page fault and no syscall. Where the advice is not
//! supported it falls back to reading the range into the page cache, which
//! at least saves the writer the page allocation.
//!
//! It is only a hint: requests are dropped when the queue is full, errors
//! are ignored, and the writer checks [`MappedFile::is_populated`] and
//! writes with `pwritev` wherever the prewarmer has not been. Nothing here
//! changes a byte of any file. The thread holds a segment's map only while
//! it works on it (a `Weak` reference otherwise), so it never keeps a
//! rolled segment from being trimmed for long.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{OnceLock, Weak};

use super::mapped_file::MappedFile;

/// Ranges waiting to be prepared; more are dropped.
const QUEUE: usize = 64;
/// Bytes prepared per step (the writer can use each step as soon as it is done).
const STEP: u64 = 256 * 1024;

struct Job {
    file: Weak<MappedFile>,
    offset: u64,
    len: u64,
}

static PREWARMER: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

/// Asks the prewarmer to prepare `[offset, offset + len)` of `file` (best effort).
pub fn request(file: Weak<MappedFile>, offset: u64, len: u64) {
    let sender = PREWARMER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("strata-prewarm".into())
            .spawn(move || {
                let mut populate_works = true;
                let mut buf = Vec::new();
                for job in rx {
                    let mut at = 0;
                    while at < job.len {
                        // Upgrade per step: a rolled segment is released quickly.
                        let Some(file) = job.file.upgrade() else {
                            break;
                        };
                        let n = (job.len - at).min(STEP);
                        if populate_works {
                            match file.populate_writable(job.offset + at, n) {
                                Ok(()) => {}
                                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                                    populate_works = false;
                                }
                                // Out of memory, say: leave this range to the writer.
                                Err(_) => break,
                            }
                        }
                        if !populate_works {
                            buf.resize(STEP as usize, 0);
                            file.read_ahead(job.offset + at, n, &mut buf);
                        }
                        at += n;
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = sender {
        let _ = tx.try_send(Job { file, offset, len });
    }
}
