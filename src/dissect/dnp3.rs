//! DNP3 (IEEE 1815): flow state and events. (Being written: the parser lands in otwatch-parsers first.)

use serde::Serialize;

use super::{Ctx, Dir};

/// The port its servers listen on.
pub const DEFAULT_PORT: u16 = 20000;
/// The most bytes the dissector may leave unconsumed (one partial frame).
pub const MAX_BUFFERED: usize = 292;

/// The `dnp3` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dnp3Event {}

#[derive(Debug, Default)]
pub struct Dnp3Flow {}

impl Dnp3Flow {
    pub fn on_stream_data(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir, data: &[u8]) -> usize {
        data.len()
    }

    pub fn on_datagram(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir, _data: &[u8]) {}

    pub fn on_gap(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir) {}

    pub fn on_close(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// Whether a flow's first payload is DNP3, and if so whether it comes from the master.
pub fn probe(_payload: &[u8]) -> Option<bool> {
    None
}
