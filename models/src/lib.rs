//! Baseline learning and anomaly scoring for otwatch.
//!
//! The dissectors' events are turned into protocol-neutral [`Observation`]s (in the `otwatch`
//! crate); an [`Engine`] learns a [`Baseline`] from them, then scores later observations against
//! it and raises deduplicated [`Alert`]s. Everything here runs on capture time, so a replay of a
//! week-long capture gives the alerts a live run would have given.

pub mod alert;
pub mod baseline;
pub mod behaviour;
pub mod detect;
pub mod engine;
pub mod fuzzing;
pub mod learn;
pub mod obs;
mod ranges;
pub mod small;
pub mod split;

pub use alert::{Alert, AlertBook, AlertKey, AlertKind, AlertState, Bare, Found, Severity};
pub use baseline::{Baseline, BaselineError};
pub use engine::{Engine, EngineConfig};
pub use obs::{
    Access, Accesses, Channel, Command, Kind, Observation, Ports, Proto, Values, ValuesAt,
};

/// Nanoseconds per second, for capture timestamps.
pub const NANOS: i64 = 1_000_000_000;

/// Seconds between two capture timestamps.
pub fn secs(from: i64, to: i64) -> f64 {
    (to.saturating_sub(from)) as f64 / NANOS as f64
}
