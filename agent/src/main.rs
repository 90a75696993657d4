//! The `agentloop` binary: parse, run, exit with the command's status.

fn main() {
    std::process::exit(agentloop::run(std::env::args_os()));
}
