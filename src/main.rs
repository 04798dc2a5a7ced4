//! The `kraliki` binary.

fn main() -> std::process::ExitCode {
    kraliki::cli::main()
}
