//! Starts the real `strata` binary on an ephemeral port in a temp dir and
//! connects gRPC clients to it. The broker's address comes from its own
//! output line (`strata listening on ADDR`), never from sleeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use strata::proto::v1::admin_client::AdminClient;
use strata::proto::v1::log_client::LogClient;
use tonic::transport::Channel;

/// How long a broker may take to print its listening line before the test
/// fails (a failure detector, not synchronization).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects a channel to the broker at `addr` (`HOST:PORT`).
///
/// # Errors
/// The connection was refused or reset (a broker being killed, or one at
/// its connection limit).
pub async fn try_channel_to(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("HOST:PORT makes a valid URI")
        .connect()
        .await
}

/// [`try_channel_to`] for a broker that must be up: panics if it is not.
pub async fn channel_to(addr: &str) -> Channel {
    try_channel_to(addr).await.expect("connect")
}

/// A broker process.
pub struct BrokerProcess {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The metrics listener's `127.0.0.1:PORT`, when started with
    /// `--metrics-listen`.
    pub metrics_addr: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The extra `serve` arguments it was started with, which
    /// [`BrokerProcess::restart`] passes again.
    extra: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl BrokerProcess {
    /// Starts a broker on a fresh temp dir.
    pub fn start() -> BrokerProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut b = BrokerProcess::start_in(temp.path(), &[]);
        b._temp = Some(temp);
        b
    }

    /// Starts a broker on a fresh temp dir with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut b = BrokerProcess::start_in(temp.path(), extra);
        b._temp = Some(temp);
        b
    }

    /// Starts a broker on `data_dir` with extra `serve` arguments.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> BrokerProcess {
        Self::spawn(data_dir, extra, None, &[])
    }

    /// Starts a broker on `data_dir` with extra `serve` arguments and extra
    /// environment variables (failpoints, say).
    pub fn start_in_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        Self::spawn(data_dir, extra, None, env)
    }

    /// Starts a broker on a fresh temp dir with extra `serve` arguments and
    /// hands every line it logs (stderr) to the returned receiver.
    pub fn start_logged(extra: &[&str]) -> (BrokerProcess, mpsc::Receiver<String>) {
        let temp = tempfile::tempdir().expect("temp dir");
        let (tx, rx) = mpsc::channel();
        let mut b = BrokerProcess::spawn(temp.path(), extra, Some(tx), &[]);
        b._temp = Some(temp);
        (b, rx)
    }

    fn spawn(
        data_dir: &Path,
        extra: &[&str],
        log: Option<mpsc::Sender<String>>,
        env: &[(&str, &str)],
    ) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn strata");
        if let (Some(log), Some(stderr)) = (log, child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    let _ = log.send(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The broker prints its metrics address before the gRPC one.
                if let Some(addr) = line.strip_prefix("strata metrics listening on ") {
                    let _ = tx.send((true, addr.trim().to_string()));
                } else if let Some(addr) = line.strip_prefix("strata listening on ") {
                    let _ = tx.send((false, addr.trim().to_string()));
                }
            }
        });
        let mut metrics_addr = None;
        let addr = loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok((true, a)) => metrics_addr = Some(a),
                Ok((false, a)) => break a,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!("broker did not start (exit: {status:?})");
                }
            }
        };
        BrokerProcess {
            child: Some(child),
            addr,
            metrics_addr,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            _temp: None,
        }
    }

    /// Restarts on the same data dir with the same extra `serve` arguments
    /// (after `kill` or `stop`).
    pub fn restart(&mut self) {
        let temp = self._temp.take();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut b = BrokerProcess::start_in(&self.data_dir, &extra);
        b._temp = temp;
        std::mem::swap(self, &mut b);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait for the exit (keeping this test's runtime running, so
    /// its client connections can close), and return whether it was status 0.
    pub async fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) with a pid we own and a valid signal.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        tokio::task::spawn_blocking(move || c.wait().map(|s| s.success()).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    /// A channel to the broker.
    pub async fn channel(&self) -> Channel {
        channel_to(&self.addr).await
    }

    /// A `Log` client.
    pub async fn log(&self) -> LogClient<Channel> {
        LogClient::new(self.channel().await)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// An `Admin` client.
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// Anonymous (heap) memory of the broker in KiB, from /proc.
    pub fn rss_anon_kib(&self) -> u64 {
        rss_anon_kib_of(self.pid())
    }

    /// The broker's resource use now, from /proc.
    pub fn resources(&self) -> Resources {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} line"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("proc fd")
            .count() as u64;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .expect("proc maps")
            .lines()
            .count() as u64;
        Resources {
            rss_kib: kib("VmRSS:"),
            rss_anon_kib: kib("RssAnon:"),
            fds,
            maps,
        }
    }
}

/// A sample of a broker's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Resident memory in KiB, including mapped file pages.
    pub rss_kib: u64,
    /// Anonymous (heap) resident memory in KiB.
    pub rss_anon_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Memory mappings.
    pub maps: u64,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on localhost (bound, then released), for a broker that
/// must keep its address across a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `strata verify DATA_DIR` and fails, with its report, unless every
/// CRC checked clean; `after` names what came before, for the message.
pub fn assert_verify_clean(data_dir: &std::path::Path, after: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("verify")
        .arg(data_dir)
        .output()
        .expect("run strata verify");
    assert!(
        out.status.success(),
        "verify after {after}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A runtime of its own for a test's attacker, with `worker_threads`
/// threads: on the test's runtime the attacker's tasks would queue ahead of
/// the well-behaved client's, and the client's figures would measure the
/// test process's scheduler rather than the broker. (Attacker, client and
/// broker still share the machine's cores.) Stop it with
/// `shutdown_background` inside async code.
pub fn attacker_runtime(worker_threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .thread_name("attacker")
        .enable_all()
        .build()
        .expect("attacker runtime")
}

/// CPU seconds (user + system) of the threads in `/proc/PID/task` whose
/// name starts with `name` (all threads for `""`), from their `stat` files.
pub fn cpu_secs(pid: u32, name: &str) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        total += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    total as f64 / ticks
}

/// Anonymous (heap) memory of process `pid` in KiB, from /proc; for code
/// that samples a broker without holding its [`BrokerProcess`].
pub fn rss_anon_kib_of(pid: u32) -> u64 {
    proc_status_number(pid, "RssAnon").expect("RssAnon line")
}

/// A numeric field of `/proc/PID/status` (`Threads`, `RssAnon` in KiB…),
/// or `None` if the process or the field is gone.
pub fn proc_status_number(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let value = l.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}
