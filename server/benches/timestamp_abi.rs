//! What the plugin boundary costs on the output hot path: the `timestamp`
//! plugin's filter called through the loaded `.so` (ABI object, RVec batches,
//! catch_unwind guard) against the same function linked in-process.
//!
//! Run with `scripts/bench timestamp` (builds the release `.so` first).

use std::time::Instant;

use abi_stable::std_types::RVec;
use vespene::plugins::{Instance, Registry};
use vespene::settings::{PluginEntry, PluginSettings};
use vespene_plugin_api::{BatchInfo, OutputLine, Stream};

const TOTAL_LINES: usize = 2_000_000;

fn batch(size: usize) -> RVec<OutputLine> {
    (0..size)
        .map(|i| OutputLine {
            stream: Stream::Output,
            at_unix_ms: 90_000 + (i as i64 / 64),
            text: format!("compiling crate number {i} of the workspace").into(),
        })
        .collect()
}

/// The best of three rounds, so a noisy neighbour does not decide the ratio.
fn measure(label: &str, batch_size: usize, mut run: impl FnMut(RVec<OutputLine>) -> RVec<OutputLine>) -> f64 {
    let rate = (0..3).map(|_| round(batch_size, &mut run)).fold(0.0, f64::max);
    println!("{label:<34} batch {batch_size:>4}: {rate:>14.0} lines/s  ({:.1} ns/line)", 1e9 / rate);
    rate
}

fn round(batch_size: usize, run: &mut impl FnMut(RVec<OutputLine>) -> RVec<OutputLine>) -> f64 {
    let batches = TOTAL_LINES / batch_size;
    let inputs: Vec<RVec<OutputLine>> = (0..batches).map(|_| batch(batch_size)).collect();
    let started = Instant::now();
    let mut checksum = 0usize;
    for input in inputs {
        checksum += run(input).len();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(checksum, batches * batch_size);
    (batches * batch_size) as f64 / secs
}

fn main() {
    // target/release, beside target/bench-harness where this harness runs.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).expect("the harness runs from target/PROFILE/deps").join("release");
    let mut settings = PluginSettings::default();
    settings.output.insert(
        "timestamp".into(),
        PluginEntry {
            library: "timestamp".into(),
            enabled: true,
            per_project: false,
            seal: false,
            sha256: None,
            params: Default::default(),
        },
    );
    let registry = Registry::load(&settings, std::slice::from_ref(&dir))
        .unwrap_or_else(|e| panic!("{e} (build it first: cargo build --release -p vespene-plugin-timestamp)"));
    let plugin = match &registry.all()[0].instance {
        Instance::Output(o) => o,
        _ => unreachable!(),
    };
    let info = BatchInfo { build_id: 1, build_started_unix_ms: 0 };
    println!("timestamp output plugin, {TOTAL_LINES} lines per measurement");
    for size in [1, 64, 1024] {
        let abi = measure("through the ABI (.so)", size, |lines| plugin.filter(info, lines).unwrap());
        let native = measure("in-process (same function)", size, |mut lines| {
            vespene_timestamp::stamp_lines(&info, &mut lines);
            lines
        });
        println!("  ratio in-process / ABI at batch {size}: {:.2}x\n", native / abi);
    }
}
