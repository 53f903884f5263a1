//! The `rampart` binary: parse the command line, run one command, map the outcome to a
//! documented exit code. Errors are printed once, with their chain.

use std::process::ExitCode;

fn main() -> ExitCode {
    rampart::cli::main()
}

// Validation allocates many small strings and maps on two threads; mimalloc's per-thread
// heaps keep that from contending (glibc malloc spent ~20 % of a large run in its arenas).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
