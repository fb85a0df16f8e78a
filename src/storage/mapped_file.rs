//! One memory-mapped file: the building block of `.log`, `.index` and `.timeindex`.
//!
//! A writable [`MappedFile`] maps `capacity` bytes of address space at once
//! but reserves disk blocks (`fallocate`) chunk by chunk as the writer
//! advances, so an idle active segment costs one chunk of disk, and a full
//! disk shows up as an error from [`MappedFile::reserve`] before any store,
//! never as a `SIGBUS`. Bytes are written through a raw pointer into ranges no
//! reader can see yet; readers only ever get slices of ranges that the owner
//! has published (see `watermark` in the partition log), so the writer and
//! the readers never alias.
//!
//! A file is never shrunk while a map of it exists: [`MappedFile::trim`]
//! consumes the value, dropping the map before `ftruncate`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::error::{Result, StorageError};
use super::fs;

/// A file mapped into memory, writable (active segment) or read-only (sealed).
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    /// Kept open for a `.log`'s whole life: write-back errors are reported
    /// to descriptors open when they happen. Indexes (derived data) and
    /// read-only maps close theirs ([`MappedFile::close_fd`]) so a broker
    /// with many partitions needs one descriptor per partition, not three.
    file: Option<File>,
    /// `None` for a zero-length read-only file (nothing to map).
    map: Option<MmapRaw>,
    /// Bytes of address space mapped.
    capacity: u64,
    /// Bytes of the file backed by reserved disk blocks (the file length).
    allocated: AtomicU64,
    /// Reservation granularity in bytes; 0 for read-only maps.
    chunk: u64,
}

impl MappedFile {
    /// Creates a new, empty file mapped writable with room for `capacity` bytes.
    pub fn create(path: &Path, capacity: u64, chunk: u64) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Self::map_writable(path.to_path_buf(), file, capacity, chunk)
    }

    /// Opens an existing file writable, mapping at least `capacity` bytes.
    pub fn open_writable(path: &Path, capacity: u64, chunk: u64) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Self::map_writable(path.to_path_buf(), file, capacity, chunk)
    }

    fn map_writable(path: PathBuf, file: File, capacity: u64, chunk: u64) -> Result<MappedFile> {
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        let capacity = capacity.max(len).max(1);
        // Creating a raw map is safe; using it is not. The data directory is
        // owned by this process (it holds the directory lock), so no one else
        // truncates the file under the map, and we never touch bytes beyond
        // `allocated`, which is within the file.
        let map = MmapOptions::new()
            .len(capacity as usize)
            .map_raw(&file)
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(MappedFile {
            path,
            file: Some(file),
            map: Some(map),
            capacity,
            allocated: AtomicU64::new(len),
            chunk: chunk.max(4096),
        })
    }

    /// Opens an existing file read-only, mapping its whole current length.
    pub fn open_read_only(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let map = if len == 0 {
            None
        } else {
            // As in `map_writable`: sealed files are never modified or shrunk
            // while mapped.
            Some(
                MmapOptions::new()
                    .len(len as usize)
                    .map_raw_read_only(&file)
                    .map_err(|e| StorageError::io(path, e))?,
            )
        };
        drop(file);
        Ok(MappedFile {
            path: path.to_path_buf(),
            // The map keeps the contents reachable; no descriptor needed.
            file: None,
            map,
            capacity: len,
            allocated: AtomicU64::new(len),
            chunk: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of address space mapped: the most this file can hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Current file length (bytes backed by reserved blocks).
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Makes sure `[0, end)` is backed by reserved disk blocks, growing the
    /// file a chunk at a time. Only the single writer calls this.
    ///
    /// # Errors
    /// [`StorageError::DiskFull`] when the blocks cannot be reserved; nothing
    /// was written and the file is unchanged in what it holds.
    pub fn reserve(&self, end: u64) -> Result<()> {
        let allocated = self.allocated();
        if end <= allocated {
            return Ok(());
        }
        debug_assert!(end <= self.capacity, "reserve past the mapped capacity");
        let target = end
            .div_ceil(self.chunk)
            .saturating_mul(self.chunk)
            .min(self.capacity);
        self.with_fd(|f| fs::preallocate(f, allocated, target - allocated))?;
        self.allocated.store(target, Ordering::Relaxed);
        Ok(())
    }

    /// Where the file's data ends when everything after that point is
    /// provably unwritten: the first hole (`lseek(SEEK_HOLE)`) when no data
    /// follows it (`lseek(SEEK_DATA)` finds none). Pre-allocated blocks never
    /// written read as zeros and count as a hole on ext4 and XFS (pages
    /// written but not yet on disk count as data). `None` when that cannot
    /// be shown (no descriptor, no support, data after a hole): then every
    /// byte must be read. Recovery uses it to skip the zero-filled reserved
    /// tail without reading it, which is what keeps a restart of 10,000
    /// partitions after `kill -9` fast.
    pub fn unwritten_tail_start(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_ref()?.as_raw_fd();
        let allocated = self.allocated() as libc::off_t;
        // SAFETY: lseek only reads its integer arguments; the descriptor is
        // owned by `self.file` and stays open for the call.
        let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
        if hole < 0 || hole >= allocated {
            return None;
        }
        // SAFETY: as above.
        let data = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
        let no_data_after =
            data < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
        no_data_after.then_some(hole as u64)
    }

    /// Writes `head` then `pieces`, one after another, into the file at `position` with
    /// `pwritev(2)`: the same single copy into the page cache as a store
    /// through the map, but without one page fault per 4 KiB page on fresh
    /// pages (several times faster on ext4). The shared map sees the bytes
    /// at once (Linux keeps the page cache and shared maps coherent).
    ///
    /// The caller is the only writer, the range is reserved, and no reader
    /// has been told it exists yet.
    ///
    /// # Errors
    /// The write's I/O error (with the path); a full disk as `DiskFull`.
    pub fn write_vectored(&self, position: u64, head: &[u8], pieces: &[&[u8]]) -> Result<()> {
        let total: usize = head.len() + pieces.iter().map(|p| p.len()).sum::<usize>();
        assert!(
            position + total as u64 <= self.allocated(),
            "write past the reserved length"
        );
        // No allocation on the hot path: the broker passes one payload piece,
        // so the header and payload fit the stack buffer.
        let to_iov = |p: &&[u8]| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut stack = [empty; 8];
        let mut heap = Vec::new();
        let parts = std::iter::once(&head)
            .chain(pieces.iter())
            .filter(|p| !p.is_empty());
        let iov: &mut [libc::iovec] = if pieces.len() < stack.len() {
            let mut n = 0;
            for (slot, p) in stack.iter_mut().zip(parts) {
                *slot = to_iov(p);
                n += 1;
            }
            &mut stack[..n]
        } else {
            heap.extend(parts.map(to_iov));
            &mut heap[..]
        };
        let (mut done, mut first) = (0usize, 0usize);
        while done < total {
            let count = (iov.len() - first).min(1024) as libc::c_int;
            // SAFETY: every iovec points into a live borrowed slice of
            // `pieces` (advanced below only within its bounds); the fd is
            // owned by `self.file`.
            let n = unsafe {
                libc::pwritev(
                    std::os::unix::io::AsRawFd::as_raw_fd(self.fd()?),
                    iov[first..].as_ptr(),
                    count,
                    (position + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(StorageError::io(&self.path, err));
            }
            if n == 0 {
                return Err(StorageError::io(
                    &self.path,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ));
            }
            let mut n = n as usize;
            done += n;
            // Skip the fully written iovecs; trim a partly written one.
            while n > 0 && first < iov.len() {
                if n >= iov[first].iov_len {
                    n -= iov[first].iov_len;
                    first += 1;
                } else {
                    // SAFETY: `n` is less than this iovec's length, so the
                    // advanced pointer stays inside the same slice.
                    iov[first].iov_base =
                        unsafe { (iov[first].iov_base as *mut u8).add(n) } as *mut libc::c_void;
                    iov[first].iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    /// Copies `bytes` into the file at `position` through the map.
    ///
    /// The caller is the only writer, `[position, position + len)` is reserved
    /// and no reader has been told the range exists yet.
    pub fn write(&self, position: u64, bytes: &[u8]) {
        let end = position + bytes.len() as u64;
        assert!(end <= self.allocated(), "write past the reserved length");
        let map = self.map.as_ref().expect("writable files are mapped");
        // SAFETY: the range is inside the mapping and reserved on disk (checked
        // above); no `&[u8]` to it has been handed out, because readers only get
        // ranges below the published watermark, which is behind this write.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                map.as_mut_ptr().add(position as usize),
                bytes.len(),
            );
        }
    }

    /// A view of `[position, position + len)`, which must lie within the
    /// published (fully written) part of the file.
    pub fn slice(&self, position: u64, len: usize) -> &[u8] {
        if len == 0 {
            return &[];
        }
        let end = position as usize + len;
        assert!(end as u64 <= self.allocated(), "read past the file length");
        let map = self.map.as_ref().expect("non-empty files are mapped");
        // SAFETY: the range is inside the mapping and the file; the writer
        // never writes into published ranges again, so the bytes are immutable
        // for as long as the borrow of `self` lasts.
        unsafe { std::slice::from_raw_parts(map.as_ptr().add(position as usize), len) }
    }

    /// Flushes the file's data (and the size change of any reservation) to
    /// disk: `fdatasync` on the kept descriptor, or `msync(MS_SYNC)` of the
    /// map and an `fdatasync` through a fresh descriptor when it was closed.
    pub fn sync_data(&self) -> Result<()> {
        if let Some(f) = &self.file {
            #[cfg(debug_assertions)]
            if let Some(e) = super::failpoint::log_sync_error() {
                return Err(StorageError::io(&self.path, e));
            }
            return f.sync_data().map_err(|e| StorageError::io(&self.path, e));
        }
        if let Some(map) = &self.map {
            map.flush().map_err(|e| StorageError::io(&self.path, e))?;
        }
        self.with_fd(|f| f.sync_data())
    }

    /// Starts write-back of the dirty pages in `[from, from + len)` without
    /// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later
    /// [`MappedFile::sync_data`] has less to write. Only a head start: it
    /// neither waits for the pages nor looks at write-back errors, which
    /// stay for `sync_data` to report (only the waiting flags of
    /// `sync_file_range` consume them).
    ///
    /// # Errors
    /// The call's own error: the write-back could not be started.
    pub fn start_writeback(&self, from: u64, len: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        let Some(f) = &self.file else { return Ok(()) };
        // SAFETY: sync_file_range only reads its integer arguments; the
        // descriptor is owned by `self.file` and stays open for the call.
        let rc = unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 {
            return Err(StorageError::io(
                &self.path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Closes the kept descriptor (indexes and read-only maps need none).
    pub fn close_fd(&mut self) {
        self.file = None;
    }

    /// The kept descriptor (only `.log` files of active segments keep one).
    fn fd(&self) -> Result<&File> {
        self.file.as_ref().ok_or_else(|| {
            StorageError::io(
                &self.path,
                std::io::Error::other("file descriptor was closed; this file is not writable"),
            )
        })
    }

    /// Runs `f` on the kept descriptor, or on a freshly opened one.
    fn with_fd<T>(&self, f: impl FnOnce(&File) -> std::io::Result<T>) -> Result<T> {
        match &self.file {
            Some(file) => f(file).map_err(|e| StorageError::io(&self.path, e)),
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .map_err(|e| StorageError::io(&self.path, e))?;
                f(&file).map_err(|e| StorageError::io(&self.path, e))
            }
        }
    }

    /// Hints the kernel that `[position, position + len)` will be read soon.
    pub fn will_need(&self, position: u64, len: usize) {
        if let Some(map) = &self.map {
            let end = (position as usize + len).min(self.allocated() as usize);
            if end > position as usize {
                // Advice is only a hint: failures change nothing.
                let _ = map.advise_range(
                    memmap2::Advice::WillNeed,
                    position as usize,
                    end - position as usize,
                );
            }
        }
    }

    /// Drops this process's page-table entries for the pages that hold any
    /// of `[start, end)`, so what a scan read stops counting in the
    /// resident set. The pages stay in the page cache (dirty ones stay
    /// dirty and are written back as usual), and a later read maps them
    /// again with a minor fault. The file's contents do not change.
    pub fn unmap_pages(&self, start: u64, end: u64) {
        let page = 4096;
        let first = start / page * page;
        let last = end
            .div_ceil(page)
            .saturating_mul(page)
            .min(self.allocated());
        let Some(map) = &self.map else { return };
        if last <= first {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared file mapping only drops this
        // process's page-table entries; it does not change the file or its
        // cached pages (the kernel carries each entry's dirty bit over to
        // the page), and a later access faults the same bytes back in, so
        // references into the range stay valid.
        unsafe {
            let _ = map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                first as usize,
                (last - first) as usize,
            );
        }
    }

    /// Gives back the page-cache pages of `[position, end of file)` that a
    /// scan touched (recovery reads the zero-filled pre-allocated tail; on a
    /// broker with many partitions those pages would otherwise pile up).
    /// Only call on ranges that hold no data anyone needs in memory.
    pub fn release_tail(&self, position: u64) {
        let page = 4096;
        let start = position.div_ceil(page) * page;
        let end = self.allocated();
        let Some(map) = &self.map else { return };
        if end <= start {
            return;
        }
        let len = (end - start) as usize;
        // SAFETY: MADV_DONTNEED on a shared file mapping only drops this
        // process's page-table entries; the file's contents are unchanged
        // and are faulted back in from the page cache or disk if touched.
        // No reference into this range is live (recovery owns the file).
        unsafe {
            let _ =
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start as usize, len);
        }
        if let Some(file) = &self.file {
            // SAFETY: posix_fadvise only reads its integer arguments; the fd
            // is owned by `file`. Advice failures change nothing.
            unsafe {
                libc::posix_fadvise(
                    std::os::unix::io::AsRawFd::as_raw_fd(file),
                    start as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
        }
    }

    /// Drops the map, shrinks the file to `len` bytes and makes it durable.
    ///
    /// Consuming `self` is what guarantees no map of this file is live when
    /// it shrinks (the caller must hold the only reference).
    pub fn trim(self, len: u64) -> Result<()> {
        let MappedFile {
            path, file, map, ..
        } = self;
        drop(map);
        let file = match file {
            Some(f) => f,
            None => std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?,
        };
        file.set_len(len).map_err(|e| StorageError::io(&path, e))?;
        file.sync_all().map_err(|e| StorageError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_grow_the_file_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = MappedFile::create(&path, 1 << 20, 64 * 1024).expect("create");
        file.reserve(100).expect("reserve");
        // A quiet partition keeps one chunk of disk.
        assert_eq!(file.allocated(), 64 * 1024);
        file.reserve(70 * 1024).expect("reserve");
        assert_eq!(file.allocated(), 128 * 1024);
        file.reserve(1 << 20).expect("reserve");
        assert_eq!(file.allocated(), 1 << 20, "never past the capacity");
        file.write(70_000, b"hello");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(on_disk.len(), 1 << 20);
        assert!(on_disk[..70_000].iter().all(|&b| b == 0));
        assert_eq!(&on_disk[70_000..70_005], b"hello");
    }

    /// Whether `dir`'s filesystem reports a freshly reserved file as one hole.
    fn unwritten_blocks_are_holes(dir: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let probe = File::create(dir.join("probe")).expect("probe");
        fs::preallocate(&probe, 0, 64 * 1024).expect("preallocate");
        // SAFETY: lseek reads only its integer arguments; `probe` is open.
        unsafe { libc::lseek(probe.as_raw_fd(), 0, libc::SEEK_HOLE) == 0 }
    }

    #[test]
    fn the_unwritten_tail_is_found_only_when_nothing_follows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = MappedFile::create(&dir.path().join("f"), 1 << 20, 256 * 1024).expect("create");
        file.reserve(200 * 1024).expect("reserve");
        assert_eq!(file.allocated(), 256 * 1024);
        file.write_vectored(0, b"frame", &[&[7u8; 100]])
            .expect("write");
        // Where this filesystem reports reserved, unwritten blocks as a hole
        // (ext4, XFS; not tmpfs) — probed with a raw lseek on a fresh file —
        // the tail must be found, starting after the written block.
        if unwritten_blocks_are_holes(dir.path()) {
            let start = file.unwritten_tail_start().expect("the unwritten tail");
            assert!((105..file.allocated()).contains(&start), "{start}");
        }
        // Data after a hole: nothing may be skipped.
        file.write_vectored(150 * 1024, b"later", &[])
            .expect("write");
        assert_eq!(file.unwritten_tail_start(), None);
    }

    /// Resident KiB of this process's mapping that starts at `addr`, from
    /// `/proc/self/smaps`.
    fn resident_kib(addr: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let start = format!("{:x}-", addr as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "no mapping at {start}");
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("an Rss line");
        rss.split_whitespace()
            .nth(1)
            .expect("kB")
            .parse()
            .expect("a number")
    }

    #[test]
    fn unmapped_pages_leave_the_resident_set_and_keep_their_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = MappedFile::create(&dir.path().join("f"), 1 << 20, 1 << 20).expect("create");
        file.reserve(1 << 20).expect("reserve");
        file.write(0, &[5u8; 512 * 1024]);
        let bytes = file.slice(0, 1 << 20);
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 5 * 512 * 1024);
        let addr = bytes.as_ptr();
        assert!(resident_kib(addr) >= 1024, "{}", resident_kib(addr));
        // Pages partly inside the range go too; the others stay.
        file.unmap_pages(4096 + 100, (1 << 20) - 4096 - 100);
        assert_eq!(resident_kib(addr), 8);
        file.unmap_pages(0, 1);
        assert_eq!(resident_kib(addr), 4);
        file.unmap_pages((1 << 20) - 1, 2 << 20);
        assert_eq!(resident_kib(addr), 0);
        // The bytes (written through the map, so dirty) are still there,
        // read back through the map and from the disk.
        assert!(file.slice(0, 512 * 1024).iter().all(|&b| b == 5));
        let on_disk = std::fs::read(dir.path().join("f")).expect("read");
        assert!(on_disk[..512 * 1024].iter().all(|&b| b == 5));
        assert!(on_disk[512 * 1024..].iter().all(|&b| b == 0));
    }
}
