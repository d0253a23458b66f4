//! otwatch: a passive monitor for industrial (OT) networks.
//!
//! Data path (see DESIGN.md): capture → decode → flows → dissect → events.

pub mod alloc;
pub mod capture;
pub mod cpus;
pub mod decode;
pub mod detection;
pub mod dissect;
pub mod duration;
pub mod event;
pub mod flow;
pub mod fuzzing;
pub mod live;
pub mod metrics;
pub mod output;
pub mod parallel;
pub mod pipeline;
mod prefetch;
pub mod replay;
pub mod run;
pub mod shards;
pub mod signals;
pub mod stats;
pub mod summary;
