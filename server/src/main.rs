//! The `vespene` binary.

fn main() -> std::process::ExitCode {
    vespene::cli::main()
}
