//! The `rampart` binary: parse the command line, run one command, map the outcome to a
//! documented exit code. Errors are printed once, with their chain.

use std::process::ExitCode;

fn main() -> ExitCode {
    rampart::cli::main()
}
