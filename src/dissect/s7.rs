//! Siemens S7 (ISO-on-TCP: TPKT, COTP, S7comm, S7comm-plus): flow state and events. (Being written: the parser lands in otwatch-parsers first.)

use serde::Serialize;

use super::{Ctx, Dir};

/// The port its servers listen on.
pub const DEFAULT_PORT: u16 = 102;
/// The most bytes the dissector may leave unconsumed (one partial frame).
pub const MAX_BUFFERED: usize = 65539;

/// The `s7comm` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Event {}

#[derive(Debug, Default)]
pub struct S7Flow {}

impl S7Flow {
    pub fn on_stream_data(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir, data: &[u8]) -> usize {
        data.len()
    }

    pub fn on_datagram(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir, _data: &[u8]) {}

    pub fn on_gap(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir) {}

    pub fn on_close(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// The `s7commplus` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7PlusEvent {}

/// The `cotp` object of an event: connection setup and teardown (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CotpEvent {}
