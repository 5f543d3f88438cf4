//! The `vespene` binary.

// See server/Cargo.toml for why, and docs/benchmarks.md for what it measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vespene::cli::main()
}
