//! The `strata` binary: parses the command line and runs it (see [`strata::cli`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::cli::Cli::parse();
    strata::cli::malloc::keep_freed_request_buffers();
    if matches!(cli.command, strata::cli::Command::Serve(_)) {
        strata::cli::malloc::limit_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(strata::cli::run(cli));
    // A blocking stdin read cannot be cancelled; do not wait for it.
    runtime.shutdown_background();
    match result {
        // The reader of stdout went away (`… | head`): a normal way to stop.
        Ok(()) | Err(strata::cli::CliError::OutputClosed) => ExitCode::SUCCESS,
        Err(e @ strata::cli::CliError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
