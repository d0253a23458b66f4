//! Glue between reassembled streams and the protocol parsers in `otwatch-parsers`: per-flow
//! protocol state, request/response matching and event building.

pub mod modbus;

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Event, EventSink, Timestamp};
use crate::stats::Stats;

/// Direction of data within a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer = 0,
    ToClient = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who is client and who is server in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub transport: &'static str,
}

/// What a dissector needs to know about the packet being processed, and where its output goes.
pub struct Ctx<'a> {
    pub ts_nanos: i64,
    pub frame: u64,
    pub source: &'a Arc<str>,
    pub endpoints: &'a Endpoints,
    pub stats: &'a mut Stats,
    pub sink: &'a mut dyn EventSink,
}

impl Ctx<'_> {
    /// An event skeleton for a PDU travelling in `dir`, completed by the current packet.
    pub fn event(&self, proto: &'static str, dir: Dir) -> Event {
        let (src, dst, direction) = match dir {
            Dir::ToServer => (self.endpoints.client, self.endpoints.server, "request"),
            Dir::ToClient => (self.endpoints.server, self.endpoints.client, "response"),
        };
        Event {
            ts: Timestamp(self.ts_nanos),
            source: Arc::clone(self.source),
            frame: self.frame,
            proto,
            transport: self.endpoints.transport,
            src_ip: src.0,
            src_port: src.1,
            dst_ip: dst.0,
            dst_port: dst.1,
            direction,
            modbus: None,
        }
    }
}

/// The application protocol state of one flow.
#[derive(Debug)]
pub enum App {
    /// Not a protocol otwatch dissects: the flow is only counted.
    None,
    Modbus(Box<modbus::ModbusFlow>),
}

impl App {
    /// Choose the dissector from the server's port. Validation happens inside the dissector:
    /// bytes on port 502 that never parse as Modbus produce no Modbus events.
    pub fn for_server_port(port: u16) -> App {
        match port {
            otwatch_parsers::modbus::DEFAULT_PORT => App::Modbus(Box::default()),
            _ => App::None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, App::None)
    }

    /// Whether `port` is one a server of a dissected protocol listens on.
    pub fn is_server_port(port: u16) -> bool {
        port == otwatch_parsers::modbus::DEFAULT_PORT
    }

    /// Stream data in order; returns how many bytes were consumed. The rest is presented again,
    /// followed by more data, on the next call.
    pub fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        match self {
            App::None => data.len(),
            App::Modbus(m) => m.on_stream_data(ctx, dir, data),
        }
    }

    /// A datagram (UDP): every PDU is inside it.
    pub fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        match self {
            App::None => {}
            App::Modbus(m) => m.on_datagram(ctx, dir, data),
        }
    }

    /// Bytes of the stream in `dir` were lost: any partial PDU is gone; resynchronise.
    pub fn on_gap(&mut self, ctx: &mut Ctx<'_>, dir: Dir) {
        match self {
            App::None => {}
            App::Modbus(m) => m.on_gap(ctx, dir),
        }
    }

    /// The most bytes the dissector may leave unconsumed (a partial PDU).
    pub fn max_buffered(&self) -> usize {
        match self {
            App::None => 0,
            App::Modbus(_) => otwatch_parsers::modbus::MAX_ADU_LEN,
        }
    }

    /// The flow ends (evicted, or the capture is over).
    pub fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        match self {
            App::None => {}
            App::Modbus(m) => m.on_close(ctx),
        }
    }
}
