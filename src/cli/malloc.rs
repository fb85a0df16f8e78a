//! glibc malloc tuning for the `strata` process, applied by `main` before
//! the runtime starts any thread.
//!
//! Two settings, each skipped when the operator set glibc's own variable
//! for it (the operator's choice wins), and both doing nothing on other C
//! libraries:
//! - [`limit_arenas`] (`strata serve` only): one malloc arena, so the
//!   broker's heap stays flat under mixed load.
//! - [`keep_freed_request_buffers`] (every command): fixed trim and mmap
//!   thresholds, so a request buffer freed at the top of the heap is not
//!   handed back to the kernel and faulted in again by the next request.

/// Malloc arenas the broker allows itself, unless `MALLOC_ARENA_MAX` says
/// otherwise.
///
/// glibc gives a thread that finds the arenas busy an arena of its own, up
/// to 8 per core, and an arena keeps the pages it once used. Under mixed load
/// (produce, streams, group churn on the runtime's worker and blocking
/// threads) the broker's anonymous memory grew about 50 KiB/min for as long
/// as the 10-minute soak ran (+8.2 %) while the live heap, traced with
/// heaptrack, stayed flat; with one arena the same soak stays flat (with
/// two it still grew; a periodic `malloc_trim` did not stop it either). A
/// deployment that puts throughput before a flat heap sets
/// `MALLOC_ARENA_MAX` (README "Reliability tests" has the price measured).
pub const MALLOC_ARENAS: i32 = 1;

/// Free memory at the top of the heap that malloc keeps instead of handing
/// it back to the kernel, unless `MALLOC_TRIM_THRESHOLD_` says otherwise:
/// 8 MiB.
///
/// glibc's default is 128 KiB, raised only after a buffer it served from
/// its own `mmap` is freed (to twice that buffer's size). A produce request
/// of 1,000 × 100-byte records arrives in a 116 KB buffer, under the
/// default mmap threshold, so the threshold never rises: eight such
/// buffers in flight freed together left up to 928 KB at the top of the
/// heap, which was trimmed, and the next requests faulted the same pages
/// in again. On this project's VM a first touch costs up to 10 µs a page
/// in the hypervisor. W1 in one process made 70–155 k page faults per 10 M
/// records with the default and 3–5 k with any threshold from 1 MiB up
/// (README "Performance" has the throughput measured).
pub const TRIM_THRESHOLD_BYTES: i32 = 8 << 20;

/// Allocations from this size up get an `mmap` of their own (and a
/// `munmap`, and page faults, each time), unless `MALLOC_MMAP_THRESHOLD_`
/// says otherwise: 4 MiB.
///
/// Setting the trim threshold turns off glibc's raising of the mmap
/// threshold, which would then stay at 128 KiB: every W4 request (16 ×
/// 16 KiB records, a 256 KiB buffer) would be mapped and unmapped on its
/// own. 4 MiB keeps requests and fetch responses of the default sizes on
/// the heap; it is half of [`TRIM_THRESHOLD_BYTES`], the ratio glibc's own
/// raising keeps.
pub const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] for the broker process.
/// Does nothing when `MALLOC_ARENA_MAX` is set or on other C libraries.
pub fn limit_arenas() {
    set_unless_overridden("MALLOC_ARENA_MAX", Param::ArenaMax, MALLOC_ARENAS);
}

/// Sets the trim threshold to [`TRIM_THRESHOLD_BYTES`] and the mmap
/// threshold to [`MMAP_THRESHOLD_BYTES`], each unless its glibc variable
/// (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`) is set. Does
/// nothing on other C libraries.
pub fn keep_freed_request_buffers() {
    set_unless_overridden(
        "MALLOC_TRIM_THRESHOLD_",
        Param::TrimThreshold,
        TRIM_THRESHOLD_BYTES,
    );
    set_unless_overridden(
        "MALLOC_MMAP_THRESHOLD_",
        Param::MmapThreshold,
        MMAP_THRESHOLD_BYTES,
    );
}

/// The `mallopt` parameters this module sets.
#[derive(Debug, Clone, Copy)]
enum Param {
    ArenaMax,
    TrimThreshold,
    MmapThreshold,
}

fn set_unless_overridden(variable: &str, param: Param, value: i32) {
    if std::env::var_os(variable).is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let param = match param {
            Param::ArenaMax => libc::M_ARENA_MAX,
            Param::TrimThreshold => libc::M_TRIM_THRESHOLD,
            Param::MmapThreshold => libc::M_MMAP_THRESHOLD,
        };
        // SAFETY: mallopt only changes a malloc tuning parameter; `main`
        // calls this before any other thread exists.
        unsafe {
            libc::mallopt(param, value);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (param, value);
}
