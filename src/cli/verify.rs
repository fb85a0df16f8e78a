//! `strata verify DATA_DIR`: check every stored batch, topic metadata file
//! and group offsets record offline.

use std::path::PathBuf;

use clap::Args;

use super::{print_stdout, CliError};
use crate::verify::{verify, Report};

/// Arguments of `strata verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The broker's data directory (the broker must be stopped).
    #[arg(value_name = "DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Runs the check and prints the report; problems make it exit 1.
pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    let dir = args.data_dir.clone();
    let report = tokio::task::spawn_blocking(move || verify(&dir))
        .await
        .map_err(|e| CliError::Verify(e.to_string()))?
        .map_err(|e| CliError::Verify(e.to_string()))?;
    print_stdout(&render(&report))?;
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Verify(format!(
            "{} problem(s) found in {}",
            report.problem_count(),
            args.data_dir.display()
        )))
    }
}

/// The human-readable report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "checked {} partitions, {} segments: {} batches, {} records, {} bytes\n",
        report.partitions, report.segments, report.batches, report.records, report.bytes
    );
    out.push_str(&format!(
        "checked {} topic metadata files, {} group offsets files: {} records\n",
        report.metadata_files, report.offsets_files, report.offsets_records
    ));
    for p in &report.problems {
        out.push_str(&format!("PROBLEM {p}\n"));
    }
    for p in &report.file_problems {
        out.push_str(&format!("PROBLEM {p}\n"));
    }
    if report.is_clean() {
        out.push_str("no problems found: every batch, metadata file and offsets record passed its CRC check\n");
    }
    out
}
