//! Every filesystem call the storage layer makes that matters for durability.
//!
//! Keeping them here gives one place to read the durability protocol and one
//! place to inject faults later. The rules:
//!
//! - Space for mapped files is reserved with `fallocate(2)` before any store
//!   into it, so a full disk is an `ENOSPC` error here and never a `SIGBUS`
//!   inside a page fault. Filesystems without `fallocate` get zeros written
//!   with `pwrite` instead, which reserves the blocks just as well.
//! - A file that is created or renamed is durable only after its directory
//!   is fsynced too ([`sync_dir`]).
//! - Small metadata files are replaced atomically: write a temp file, fsync
//!   it, rename it over the old one, fsync the directory ([`write_atomic`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Reserves disk blocks for `[offset, offset + len)` of `file`, growing the
/// file if needed, so later stores through a shared map cannot fault.
///
/// # Errors
/// `ENOSPC` when the disk is full; other I/O errors as the kernel reports them.
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate only reads its integer arguments; the fd is owned by `file`.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => write_zeros(file, offset, len),
        _ => Err(err),
    }
}

/// Fallback for filesystems without `fallocate`: write real zero blocks.
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = vec![0u8; CHUNK];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], offset + written)?;
        written += n as u64;
    }
    Ok(())
}

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: temp file, fsync,
/// rename, fsync of the directory. A crash leaves either the old or the new
/// contents, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(temp_name(path.file_name().unwrap_or_default()));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Longest file name the filesystems we run on accept (`NAME_MAX`), bytes.
const NAME_MAX: usize = 255;

/// The temporary name [`write_atomic`] writes `name` under: `name.tmp`, or,
/// when that would pass [`NAME_MAX`] (a topic name of 249 characters makes a
/// 254-byte metadata file name), a shortened prefix with the CRC-32 of the
/// whole name. Both end in `.tmp`, which start-up clean-ups look for.
fn temp_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = name.as_bytes();
    if bytes.len() + 4 <= NAME_MAX {
        let mut tmp = name.to_os_string();
        tmp.push(".tmp");
        return tmp;
    }
    let mut tmp = bytes[..200].to_vec();
    tmp.extend_from_slice(format!("-{:08x}.tmp", crc32fast::hash(bytes)).as_bytes());
    std::ffi::OsString::from_vec(tmp)
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// An exclusive advisory lock on a directory, held for as long as the value lives.
///
/// Two brokers (or a broker and an offline tool) must never touch the same live
/// files: memory-mapped files modified from outside are undefined behaviour.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir/.lock`, failing at once if another process holds it.
    ///
    /// # Errors
    /// `WouldBlock` when the directory is locked by someone else.
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".lock"))?;
        // SAFETY: flock only reads its integer arguments; the fd is owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock { _file: file })
    }
}

/// Raises the soft limit on open files to the hard limit (each partition's
/// active `.log` keeps one descriptor open). Returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_work_for_names_up_to_the_file_name_limit() {
        let dir = tempfile::tempdir().unwrap();
        for len in [1, 250, 251, 255] {
            let name = "n".repeat(len);
            let path = dir.path().join(&name);
            write_atomic(&path, b"first").unwrap();
            write_atomic(&path, b"second").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"second", "{len}");
            let tmp = temp_name(std::ffi::OsStr::new(&name));
            assert!(tmp.len() <= NAME_MAX && tmp.to_string_lossy().ends_with(".tmp"));
        }
    }
}
