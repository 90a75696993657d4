//! The `agentloop` command line, built inside this package so the end-to-end tests can run it
//! as a real process (`CARGO_BIN_EXE_agentloop-e2e`) and SIGKILL it.

fn main() {
    std::process::exit(agentloop::run(std::env::args_os()));
}
