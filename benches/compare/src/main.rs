//! Side-by-side load comparisons against tower-sessions 0.14 with tower-sessions-redis-store 0.16, on
//! the benchmark's own `redis-server`, interleaved:
//!
//!     cargo build --release --example djforge        # first, for the default mode
//!     cargo run --release --manifest-path benches/compare/Cargo.toml
//!
//! * `COMPARE_MODE=djforge` (the default): the real DJForge example binary, as shipped, against the
//!   same app on tower-sessions and against no sessions, three workloads, a session-size axis
//!   (`djcompare.rs`).
//! * `COMPARE_MODE=libs` (also chosen by setting `LOAD_LIBS`): the libraries in process on the load
//!   benchmark's handlers, with the read cache on and off and a floor (`libs.rs`).
//!
//! Environment as for the load benchmark: `LOAD_SECS` (default 2), `LOAD_REPS` (default 3),
//! `LOAD_CLIENTS` (default 64), `LOAD_PIN` (`0`: no CPU placement), `LOAD_SERVER_WORKERS`; the rest
//! per mode, in its module.

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../../load/cpu.rs"]
mod cpu;
#[path = "../../load/driver.rs"]
mod driver;
#[path = "../../load/median.rs"]
mod median;
#[path = "../../load/probe.rs"]
mod probe;
#[path = "../../load/sf_app.rs"]
mod sf_app;

mod apps;
mod djcompare;
mod djdriver;
mod libs;

fn main() {
    let mode = std::env::var("COMPARE_MODE").unwrap_or_else(|_| {
        if std::env::var_os("LOAD_LIBS").is_some() {
            "libs".into()
        } else {
            "djforge".into()
        }
    });
    match mode.as_str() {
        "djforge" => djcompare::main(),
        "libs" => libs::main(),
        other => panic!("COMPARE_MODE={other:?}: expected djforge or libs"),
    }
}
