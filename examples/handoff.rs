//! How long one core takes to hand a cache line to another: two threads, on the first two CPUs
//! this process may use, bounce one counter between them; printed is the mean one-way time in
//! nanoseconds.
//!
//! `replay --workers N` and `live --workers N` hand every packet and every observation from one
//! core to another, so their speed depends on this figure far more than one worker's does. A
//! virtual machine's two vCPUs can sit on cores that share a last-level cache (about 30 ns on
//! the machine of benches/README.md) or on cores that do not (about 160 ns there, from one
//! minute to the next): two workers then went from 1.35x one worker to about 0.6x, while two
//! independent one-worker runs still ran side by side. `benches/ratios.sh` measures it with
//! every round so that its two-worker figures say which machine they were taken on.
//!
//!     cargo build --release --example handoff && target/release/examples/handoff [ROUNDS]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The counter on a cache line of its own.
#[repr(align(128))]
struct Line(AtomicU64);

/// Pins the calling thread to `cpu`; whether it could.
#[cfg(target_os = "linux")]
fn pin(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: `one` is a zeroed `cpu_set_t` and its size is the one passed; `cpu` is below
    // CPU_SETSIZE, so CPU_SET stays inside it; pid 0 is the calling thread.
    unsafe {
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn pin(_: usize) -> bool {
    false
}

/// Waits for the counter to reach `turn`, then passes it on: `turns` times, every other turn.
fn bounce(line: &Line, first: u64, turns: u64) {
    let mut turn = first;
    while turn < turns {
        while line.0.load(Ordering::Acquire) != turn {
            std::hint::spin_loop();
        }
        line.0.store(turn + 1, Ordering::Release);
        turn += 2;
    }
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let turns = 2 * rounds.max(1);
    // Two threads spinning on one CPU would each wait for the scheduler's slice: no figure.
    let cpus = otwatch::cpus::allowed();
    let (Some(&first), Some(&second)) = (cpus.first(), cpus.get(1)) else {
        eprintln!("handoff: needs two CPUs to run on, has {}", cpus.len());
        std::process::exit(2);
    };
    if !pin(first) {
        eprintln!("handoff: could not pin to CPU {first}");
        std::process::exit(2);
    }
    let line = Arc::new(Line(AtomicU64::new(0)));
    let other = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || {
            if !pin(second) {
                eprintln!("handoff: could not pin to CPU {second}");
                std::process::exit(2);
            }
            bounce(&line, 1, turns);
        })
    };
    let start = Instant::now();
    bounce(&line, 0, turns);
    if other.join().is_err() {
        std::process::exit(2);
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / turns as f64);
}
