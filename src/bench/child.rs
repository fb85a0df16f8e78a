//! A `strata serve` child process for the workloads that kill and restart
//! a broker (W7 `bench partitions`, W8 `bench restart`): an embedded broker
//! cannot be killed with SIGKILL, and its memory cannot be told apart from
//! the load generator's.
//!
//! The child is this same executable, started as `strata serve --data-dir
//! DIR --listen 127.0.0.1:0` plus the caller's extra arguments. Its address
//! is read from the `strata listening on ADDR` line it prints on stdout once
//! it accepts connections, never guessed or waited for with sleeps. It is
//! killed if this process drops it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BenchError;

/// Longest a child may take from spawn to its listening line (recovery of
/// a large data directory included) before the bench gives up on it.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Memory of a process, from `/proc/PID/status`, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessMemory {
    /// Resident set size now (`VmRSS`): mapped segment pages included.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Resident anonymous memory (`RssAnon`): the heap, without file pages.
    pub anon_kib: u64,
    /// Resident file pages (`RssFile`): mapped segment and index pages
    /// (page cache the kernel can reclaim) and the binary's own pages.
    pub file_kib: u64,
}

impl ProcessMemory {
    /// Parses the `VmRSS`, `VmHWM`, `RssAnon` and `RssFile` lines of a
    /// `/proc/PID/status` text (`VmRSS:\t  1234 kB`). `None` if one is
    /// missing.
    pub fn parse(status: &str) -> Option<ProcessMemory> {
        let field = |name: &str| -> Option<u64> {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        };
        Some(ProcessMemory {
            rss_kib: field("VmRSS")?,
            peak_rss_kib: field("VmHWM")?,
            anon_kib: field("RssAnon")?,
            file_kib: field("RssFile")?,
        })
    }
}

/// The data directory for a fresh child broker: `dir` if given (it must be
/// empty or not exist, and is left in place), else a temporary directory
/// named with `prefix`, removed when the returned guard drops.
///
/// # Errors
/// `dir` holds something, or the temporary directory cannot be made.
pub fn fresh_data_dir(
    dir: Option<&Path>,
    prefix: &str,
) -> Result<(Option<tempfile::TempDir>, PathBuf), BenchError> {
    if let Some(dir) = dir {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BenchError::Usage(format!(
                "--data-dir {} is not empty: the bench needs a fresh broker",
                dir.display()
            )));
        }
        return Ok((None, dir.to_path_buf()));
    }
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(BenchError::TempDir)?;
    let path = temp.path().to_path_buf();
    Ok((Some(temp), path))
}

/// A running `strata serve` child.
#[derive(Debug)]
pub struct ChildBroker {
    child: Child,
    addr: String,
    data_dir: PathBuf,
    extra: Vec<OsString>,
}

impl ChildBroker {
    /// Starts `strata serve` on `data_dir` with `extra` arguments; returns
    /// it once it listens, with the time from spawn to its listening line.
    ///
    /// # Errors
    /// The executable cannot be found or spawned, the child exits or closes
    /// its stdout before listening, or it takes longer than
    /// [`START_TIMEOUT`].
    pub async fn start(
        data_dir: &Path,
        extra: &[OsString],
    ) -> Result<(ChildBroker, Duration), BenchError> {
        let (child, addr, took) = spawn(data_dir, extra).await?;
        Ok((
            ChildBroker {
                child,
                addr,
                data_dir: data_dir.to_path_buf(),
                extra: extra.to_vec(),
            },
            took,
        ))
    }

    /// The gRPC address it listens on (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its memory now, or `None` where `/proc` cannot be read.
    pub fn memory(&self) -> Option<ProcessMemory> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        ProcessMemory::parse(&status)
    }

    /// Kills it with SIGKILL (no clean shutdown, no flush) and reaps it.
    ///
    /// # Errors
    /// The signal could not be sent or the child not reaped.
    pub async fn kill(&mut self) -> Result<(), BenchError> {
        self.child
            .kill()
            .await
            .map_err(|e| BenchError::Failed(format!("cannot kill the broker: {e}")))
    }

    /// Starts it again on the same data directory with the same arguments
    /// (after [`kill`](Self::kill)); returns the time from spawn to its
    /// listening line. The address changes: each start picks a free port.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) -> Result<Duration, BenchError> {
        let (child, addr, took) = spawn(&self.data_dir, &self.extra).await?;
        self.child = child;
        self.addr = addr;
        Ok(took)
    }
}

/// Spawns the child and reads its stdout until the listening line; the
/// rest of its stdout is drained by a task so the child never blocks on a
/// full pipe.
async fn spawn(
    data_dir: &Path,
    extra: &[OsString],
) -> Result<(Child, String, Duration), BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Failed(format!("cannot find the strata executable: {e}")))?;
    let mut command = Command::new(&exe);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| BenchError::Failed(format!("cannot start {} serve: {e}", exe.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Failed("the broker's stdout is not a pipe".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("strata listening on ") {
                return Ok(Some(addr.trim().to_string()));
            }
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let addr = match listening {
        Ok(Ok(Some(addr))) => addr,
        Ok(Ok(None)) => {
            let status = child.wait().await.ok();
            return Err(BenchError::Failed(format!(
                "the broker exited before it listened ({})",
                status.map_or_else(|| "status unknown".to_string(), |s| s.to_string())
            )));
        }
        Ok(Err(e)) => {
            return Err(BenchError::Failed(format!(
                "cannot read the broker's stdout: {e}"
            )))
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(BenchError::Failed(format!(
                "the broker did not listen within {} s",
                START_TIMEOUT.as_secs()
            )));
        }
    };
    let took = started.elapsed();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_the_status_lines() {
        let status = "Name:\tstrata\nVmHWM:\t   20480 kB\nVmRSS:\t   16384 kB\n\
                      RssAnon:\t    4096 kB\nRssFile:\t   12288 kB\n";
        assert_eq!(
            ProcessMemory::parse(status),
            Some(ProcessMemory {
                rss_kib: 16384,
                peak_rss_kib: 20480,
                anon_kib: 4096,
                file_kib: 12288,
            })
        );
    }

    #[test]
    fn a_status_without_one_of_the_lines_is_not_read() {
        assert_eq!(ProcessMemory::parse("VmRSS:\t1 kB\nVmHWM:\t2 kB\n"), None);
        // A prefix of another field's name does not count.
        assert_eq!(
            ProcessMemory::parse("VmRSSx:\t1 kB\nVmHWM:\t2 kB\nRssAnon:\t3 kB\nRssFile:\t4 kB\n"),
            None
        );
    }
}
