//! The `handoff` binary: block signals, then hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // First, while this is the only thread: a SIGTERM that arrives from here
    // on stays pending until the supervisor reads it (see handoff::signals).
    let blocked = handoff::signals::block();
    ExitCode::from(handoff::cli::main(blocked))
}
