//! Output append benchmark (filled in with the store).
fn main() {}
