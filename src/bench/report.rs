//! Figures of a benchmark and how they are shown: the human summary and the
//! one-line JSON object of `--json`.
//!
//! Latencies are recorded in microseconds into an HdrHistogram (3
//! significant digits) and reported in milliseconds with 3 decimals.
//! Throughput in MB/s counts key + value bytes, with 1 MB = 10^6 bytes.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Largest latency a histogram records, microseconds (1 hour); larger values
/// saturate.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: 1 ≤ low, 2 × low ≤ high, sigfig ≤ 5.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("constant histogram bounds")
}

/// Adds `source` into `into`. Both come from [`new_histogram`], so they have
/// the same bounds and the addition cannot fail; a failure is ignored.
pub fn merge_histogram(into: &mut Histogram<u64>, source: &Histogram<u64>) {
    let _ = into.add(source);
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value recorded.
    pub max_ms: f64,
}

impl LatencySummary {
    /// The `--json` form: `{"p50","p90","p99","p999","max"}`, milliseconds
    /// with 3 decimals.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
            json_number(self.p50_ms, 3),
            json_number(self.p90_ms, 3),
            json_number(self.p99_ms, 3),
            json_number(self.p999_ms, 3),
            json_number(self.max_ms, 3),
        )
    }

    /// The percentiles of a histogram of microseconds; all zero when it is
    /// empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one run of a workload measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunFigures {
    /// Records moved (produced, or consumed and decoded).
    pub records: u64,
    /// Key + value bytes of those records.
    pub bytes: u64,
    /// Wall time of the timed part, seconds.
    pub seconds: f64,
    /// Latency percentiles (what is timed depends on the workload).
    pub latency: LatencySummary,
    /// gRPC requests or stream messages the run took.
    pub requests: u64,
    /// Broker flushes completed during the run (embedded broker only).
    pub flushes: Option<u64>,
    /// Longest gap between two deliveries of one partition, ms (group).
    pub max_gap_ms: Option<f64>,
    /// CPU time (user + system) this process used during the run, seconds:
    /// the load generator's, plus the broker's with `--embedded` or the
    /// null server's for a ceiling run. `None` where it cannot be read.
    pub cpu_seconds: Option<f64>,
    /// What the whole machine's cores did during the run (`/proc/stat`).
    pub machine: Option<MachineTimes>,
}

/// Core-seconds the whole machine spent in each state over an interval, from
/// the first line of `/proc/stat` (Linux). Steal is time a virtual machine's
/// cores were runnable but the hypervisor ran something else: on a VM whose
/// host emulates the disk on the same cores, writes to disk show up here.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MachineTimes {
    /// User and nice time.
    pub user: f64,
    /// System, IRQ and softirq time.
    pub system: f64,
    /// Idle time.
    pub idle: f64,
    /// Idle time with I/O outstanding.
    pub iowait: f64,
    /// Time taken by the hypervisor.
    pub steal: f64,
}

impl MachineTimes {
    /// The counters since boot, or `None` where `/proc/stat` is missing.
    pub fn now() -> Option<MachineTimes> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(text.lines().next()?)
    }

    /// Parses the aggregate `cpu` line: `cpu user nice system idle iowait
    /// irq softirq steal ...`, in clock ticks (USER_HZ, 100 per second).
    pub fn parse(line: &str) -> Option<MachineTimes> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(str::parse::<u64>)
            .collect::<Result<_, _>>()
            .ok()?;
        if ticks.len() < 8 {
            return None;
        }
        // Sum in ticks, then convert: sums of converted values would round.
        let seconds = |t: u64| t as f64 / 100.0;
        Some(MachineTimes {
            user: seconds(ticks[0] + ticks[1]),
            system: seconds(ticks[2] + ticks[5] + ticks[6]),
            idle: seconds(ticks[3]),
            iowait: seconds(ticks[4]),
            steal: seconds(ticks[7]),
        })
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(&self, earlier: &MachineTimes) -> MachineTimes {
        MachineTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            idle: self.idle - earlier.idle,
            iowait: self.iowait - earlier.iowait,
            steal: self.steal - earlier.steal,
        }
    }
}

impl RunFigures {
    /// Records per second (0 when no time passed).
    pub fn records_per_sec(&self) -> f64 {
        per_second(self.records as f64, self.seconds)
    }

    /// Megabytes (10^6 bytes) of keys and values per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_second(self.bytes as f64 / 1e6, self.seconds)
    }

    /// Cores kept busy on average: CPU seconds per wall second.
    pub fn cores_busy(&self) -> Option<f64> {
        self.cpu_seconds.map(|cpu| per_second(cpu, self.seconds))
    }

    /// CPU microseconds spent per record moved.
    pub fn cpu_us_per_record(&self) -> Option<f64> {
        self.cpu_seconds
            .filter(|_| self.records > 0)
            .map(|cpu| cpu * 1e6 / self.records as f64)
    }

    /// The `cpu` text: cores busy and CPU time per record.
    fn cpu_text(&self) -> Option<String> {
        Some(format!(
            "{:.2} cores busy, {:.3} µs CPU per record",
            self.cores_busy()?,
            self.cpu_us_per_record()?
        ))
    }
}

/// The `machine` text: each state in cores (core-seconds per second).
fn machine_text(t: &MachineTimes, seconds: f64) -> String {
    let cores = |v: f64| per_second(v, seconds);
    format!(
        "cores: user {:.2}, system {:.2}, idle {:.2}, iowait {:.2}, steal {:.2}",
        cores(t.user),
        cores(t.system),
        cores(t.idle),
        cores(t.iowait),
        cores(t.steal)
    )
}

/// CPU time (user + system) this process has used so far, seconds, from
/// `getrusage(RUSAGE_SELF)`; `None` if the call fails.
pub fn process_cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

fn per_second(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 && seconds.is_finite() {
        amount / seconds
    } else {
        0.0
    }
}

/// Index of the median of `values`: the middle one of the sorted values, the
/// lower middle one for an even count. `None` when empty. NaNs sort last.
pub fn median_index(values: &[f64]) -> Option<usize> {
    if values.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    Some(order[(values.len() - 1) / 2])
}

/// The median run of `runs` by records/s, and every run's records/s in run
/// order. `None` when there are no runs.
pub fn median_run(runs: &[RunFigures]) -> Option<(RunFigures, Vec<f64>)> {
    let rates: Vec<f64> = runs.iter().map(RunFigures::records_per_sec).collect();
    let i = median_index(&rates)?;
    Some((runs[i].clone(), rates))
}

/// The ceiling measured in the same invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct CeilingFigures {
    /// The median ceiling run.
    pub median: RunFigures,
    /// Records/s of every ceiling run, in run order.
    pub runs_per_sec: Vec<f64>,
}

/// The outcome of one `strata bench` invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Workload name, e.g. `produce`, `consume-fetch`, `ceiling-produce`.
    pub workload: String,
    /// One line describing the workload's settings.
    pub description: String,
    /// The median run.
    pub median: RunFigures,
    /// Records/s of every run, in run order.
    pub runs_per_sec: Vec<f64>,
    /// The ceiling, when it was run too (`--compare-ceiling`).
    pub ceiling: Option<CeilingFigures>,
    /// Remarks for the human summary (e.g. a failed commit).
    pub notes: Vec<String>,
}

impl Report {
    /// Strata's median records/s as a fraction of the ceiling's.
    pub fn ratio_to_ceiling(&self) -> Option<f64> {
        let ceiling = self.ceiling.as_ref()?.median.records_per_sec();
        (ceiling > 0.0).then(|| self.median.records_per_sec() / ceiling)
    }
}

/// A JSON number with `decimals` decimals; non-finite values become 0 (JSON
/// has no NaN or infinity).
pub(crate) fn json_number(value: f64, decimals: usize) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    format!("{value:.decimals$}")
}

/// A JSON string literal for the few fixed, known-safe strings used here
/// (workload names); quotes, backslashes and control characters are escaped
/// anyway.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `--json` output: one object on one line (no trailing newline).
///
/// `{"workload", "records", "bytes", "seconds", "records_per_sec",
/// "mb_per_sec", "latency_ms": {"p50","p90","p99","p999","max"}}`, plus
/// `"ceiling_records_per_sec"` and `"ratio_to_ceiling"` when the ceiling was
/// run, `"max_gap_ms"` for the group workload, and `"cpu_seconds"` (this
/// process's CPU time during the median run) where it could be read.
pub fn render_json(report: &Report) -> String {
    let m = &report.median;
    let mut out = format!(
        "{{\"workload\":{},\"records\":{},\"bytes\":{},\"seconds\":{},\"records_per_sec\":{},\
         \"mb_per_sec\":{},\"latency_ms\":{}",
        json_string(&report.workload),
        m.records,
        m.bytes,
        json_number(m.seconds, 6),
        json_number(m.records_per_sec(), 1),
        json_number(m.mb_per_sec(), 3),
        m.latency.to_json(),
    );
    if let Some(gap) = m.max_gap_ms {
        let _ = write!(out, ",\"max_gap_ms\":{}", json_number(gap, 3));
    }
    if let Some(cpu) = m.cpu_seconds {
        let _ = write!(out, ",\"cpu_seconds\":{}", json_number(cpu, 3));
    }
    if let Some(ceiling) = &report.ceiling {
        let _ = write!(
            out,
            ",\"ceiling_records_per_sec\":{}",
            json_number(ceiling.median.records_per_sec(), 1)
        );
        if let Some(ratio) = report.ratio_to_ceiling() {
            let _ = write!(out, ",\"ratio_to_ceiling\":{}", json_number(ratio, 4));
        }
    }
    out.push('}');
    out
}

/// A count with thousands separators: `1234567` → `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_text(per_sec: f64) -> String {
    if per_sec.is_finite() && per_sec >= 0.0 {
        group_digits(per_sec.round() as u64)
    } else {
        "0".to_string()
    }
}

/// The human summary: settings, each run, the median with throughput and
/// latency percentiles, and the ceiling comparison.
pub fn render_human(report: &Report) -> String {
    let m = &report.median;
    let l = &m.latency;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload   {}: {}",
        report.workload, report.description
    );
    if report.runs_per_sec.len() > 1 {
        let runs: Vec<String> = report.runs_per_sec.iter().map(|r| rate_text(*r)).collect();
        let _ = writeln!(out, "runs       {} records/s", runs.join(" | "));
    }
    let which = if report.runs_per_sec.len() > 1 {
        "median run"
    } else {
        "result"
    };
    let _ = writeln!(
        out,
        "{which:<10} {} records, {:.1} MB in {:.3} s ({} requests/messages)",
        group_digits(m.records),
        m.bytes as f64 / 1e6,
        m.seconds,
        group_digits(m.requests)
    );
    let _ = writeln!(
        out,
        "throughput {} records/s, {:.1} MB/s",
        rate_text(m.records_per_sec()),
        m.mb_per_sec()
    );
    let _ = writeln!(
        out,
        "latency    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    );
    if let Some(flushes) = m.flushes {
        let per_flush = if flushes > 0 {
            format!("{:.0}", m.records as f64 / flushes as f64)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "flushes    {} ({:.0}/s, {} records per flush)",
            group_digits(flushes),
            per_second(flushes as f64, m.seconds),
            per_flush
        );
    }
    if let Some(gap) = m.max_gap_ms {
        let _ = writeln!(
            out,
            "max gap    {gap:.3} ms between two deliveries of one partition"
        );
    }
    if let Some(cpu) = m.cpu_text() {
        let _ = writeln!(out, "cpu        {cpu} (this process)");
    }
    if let Some(t) = m.machine {
        let _ = writeln!(out, "machine    {}", machine_text(&t, m.seconds));
    }
    if let Some(ceiling) = &report.ceiling {
        let c = &ceiling.median;
        let runs: Vec<String> = ceiling.runs_per_sec.iter().map(|r| rate_text(*r)).collect();
        let _ = writeln!(
            out,
            "ceiling    {} records/s, {:.1} MB/s, p99 {:.3} ms (runs: {})",
            rate_text(c.records_per_sec()),
            c.mb_per_sec(),
            c.latency.p99_ms,
            runs.join(" | ")
        );
        if let Some(cpu) = c.cpu_text() {
            let _ = writeln!(out, "ceiling    cpu {cpu}");
        }
        if let Some(t) = c.machine {
            let _ = writeln!(out, "ceiling    machine {}", machine_text(&t, c.seconds));
        }
        if let Some(ratio) = report.ratio_to_ceiling() {
            let _ = writeln!(
                out,
                "ratio      {:.3} of the gRPC ceiling ({:.1} %)",
                ratio,
                ratio * 100.0
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note       {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(records: u64, seconds: f64) -> RunFigures {
        RunFigures {
            records,
            bytes: records * 116,
            seconds,
            ..RunFigures::default()
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[5.0]), Some(0));
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), Some(2));
        assert_eq!(median_index(&[10.0, 30.0, 20.0]), Some(2));
        // Even: the lower middle value.
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        // NaN sorts last and is not picked while real values surround the middle.
        assert_eq!(median_index(&[f64::NAN, 1.0, 2.0]), Some(2));
    }

    #[test]
    fn median_run_picks_the_middle_rate() {
        let runs = [figures(100, 1.0), figures(300, 1.0), figures(200, 1.0)];
        let (median, rates) = median_run(&runs).unwrap();
        assert_eq!(median.records, 200);
        assert_eq!(rates, vec![100.0, 300.0, 200.0]);
        assert!(median_run(&[]).is_none());
    }

    #[test]
    fn rates_handle_zero_time() {
        let f = figures(1000, 0.0);
        assert_eq!(f.records_per_sec(), 0.0);
        assert_eq!(f.mb_per_sec(), 0.0);
        let f = figures(2_000_000, 2.0);
        assert_eq!(f.records_per_sec(), 1_000_000.0);
        assert!((f.mb_per_sec() - 116.0).abs() < 1e-9);
    }

    #[test]
    fn latency_summary_converts_micros_to_ms() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let l = LatencySummary::from_histogram(&h);
        assert!((l.p50_ms - 0.5).abs() < 0.001, "{l:?}");
        assert!((l.p99_ms - 0.99).abs() < 0.001, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.001, "{l:?}");
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn cpu_figures_are_per_wall_second_and_per_record() {
        let mut f = figures(2_000_000, 2.0);
        assert_eq!(f.cores_busy(), None);
        assert_eq!(f.cpu_text(), None);
        f.cpu_seconds = Some(3.0);
        assert_eq!(f.cores_busy(), Some(1.5));
        assert_eq!(f.cpu_us_per_record(), Some(1.5));
        assert_eq!(
            f.cpu_text().as_deref(),
            Some("1.50 cores busy, 1.500 µs CPU per record")
        );
        let mut r = report(Some(figures(4_000_000, 1.0)));
        r.median.cpu_seconds = Some(3.0);
        let text = render_human(&r);
        assert!(text.contains("cpu        1.50 cores busy"), "{text}");
        assert!(!text.contains("ceiling    cpu"), "{text}");
        assert!(render_json(&r).contains(",\"cpu_seconds\":3.000,"));
    }

    #[test]
    fn machine_times_parse_the_cpu_line_of_proc_stat() {
        let t = MachineTimes::parse("cpu  100 5 200 300 40 1 9 57 0 0").unwrap();
        assert_eq!(
            t,
            MachineTimes {
                user: 1.05,
                system: 2.10,
                idle: 3.0,
                iowait: 0.40,
                steal: 0.57,
            }
        );
        assert_eq!(MachineTimes::parse("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(MachineTimes::parse("cpu 1 2 3"), None);
        assert_eq!(MachineTimes::parse("cpu 1 2 x 4 5 6 7 8"), None);
        let later = MachineTimes::parse("cpu  200 5 300 400 40 1 9 157").unwrap();
        let d = later.since(&t);
        assert!(
            (d.user - 1.0).abs() < 1e-9 && (d.steal - 1.0).abs() < 1e-9,
            "{d:?}"
        );
        let mut f = figures(1000, 2.0);
        f.machine = Some(d);
        assert!(render_human(&report_with(f)).contains(
            "machine    cores: user 0.50, system 0.50, idle 0.50, iowait 0.00, steal 0.50"
        ));
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu_seconds().expect("getrusage");
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_seconds().expect("getrusage");
        assert!(after > before, "{before} -> {after}");
    }

    fn report_with(median: RunFigures) -> Report {
        Report {
            median,
            ..report(None)
        }
    }

    fn report(ceiling: Option<RunFigures>) -> Report {
        let mut median = figures(2_000_000, 2.0);
        median.latency = LatencySummary {
            p50_ms: 1.0,
            p90_ms: 1.5,
            p99_ms: 2.25,
            p999_ms: 3.0,
            max_ms: 4.125,
        };
        Report {
            workload: "produce".into(),
            description: "test".into(),
            median,
            runs_per_sec: vec![1_000_000.0],
            ceiling: ceiling.map(|median| CeilingFigures {
                median,
                runs_per_sec: vec![4_000_000.0],
            }),
            notes: vec![],
        }
    }

    #[test]
    fn json_has_the_fixed_keys() {
        let json = render_json(&report(None));
        assert_eq!(
            json,
            "{\"workload\":\"produce\",\"records\":2000000,\"bytes\":232000000,\
             \"seconds\":2.000000,\"records_per_sec\":1000000.0,\"mb_per_sec\":116.000,\
             \"latency_ms\":{\"p50\":1.000,\"p90\":1.500,\"p99\":2.250,\"p999\":3.000,\
             \"max\":4.125}}"
        );
    }

    #[test]
    fn json_adds_ceiling_and_ratio() {
        let json = render_json(&report(Some(figures(4_000_000, 1.0))));
        assert!(
            json.ends_with(",\"ceiling_records_per_sec\":4000000.0,\"ratio_to_ceiling\":0.2500}"),
            "{json}"
        );
    }

    #[test]
    fn json_never_prints_nan_or_quotes_unescaped() {
        assert_eq!(json_number(f64::NAN, 3), "0.000");
        assert_eq!(json_number(f64::INFINITY, 1), "0.0");
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        let mut r = report(Some(figures(0, 1.0)));
        r.median.max_gap_ms = Some(12.5);
        let json = render_json(&r);
        assert!(json.contains("\"max_gap_ms\":12.500"), "{json}");
        // A zero ceiling has no ratio.
        assert!(!json.contains("ratio_to_ceiling"), "{json}");
    }

    #[test]
    fn human_summary_lists_runs_and_ratio() {
        let mut r = report(Some(figures(4_000_000, 1.0)));
        r.runs_per_sec = vec![900_000.0, 1_000_000.0, 1_100_000.0];
        let text = render_human(&r);
        assert!(text.contains("900,000 | 1,000,000 | 1,100,000"), "{text}");
        assert!(
            text.contains("throughput 1,000,000 records/s, 116.0 MB/s"),
            "{text}"
        );
        assert!(text.contains("p99.9 3.000 ms"), "{text}");
        assert!(text.contains("ratio      0.250"), "{text}");
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
    }
}
