//! The `vespene` binary.

#[global_allocator]
static ALLOCATOR: vespene::cli::alloc::ServerAllocator = vespene::cli::alloc::ServerAllocator;

fn main() -> std::process::ExitCode {
    vespene::cli::main()
}
