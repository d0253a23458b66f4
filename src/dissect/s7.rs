//! Siemens S7 over ISO-on-TCP (port 102): TPKT framing over the reassembled stream, COTP
//! connection setup (TSAPs, rack and slot) and data transfer with EOT reassembly, then S7comm
//! (protocol id 0x32) or S7comm-plus (0x72) per reassembled payload.
//!
//! Events: one per S7comm / S7comm-plus PDU (`proto` `s7comm` / `s7commplus`), and one per COTP
//! connect/disconnect TPDU (`proto` `cotp`: who talks to which rack and slot). Read and write
//! jobs are remembered by PDU reference (bounded) so that their ack_data carries the items'
//! addresses next to the values or return codes.

use crate::detection::observe::S7Address;
use crate::dissect::registry::{S7COMM, S7COMMPLUS};
use std::collections::VecDeque;

use otwatch_parsers::s7::{
    self, CotpBody, CotpConnection, CotpReassembler, DataItem, PlusFunction, PlusOpcode,
    Reassembled, S7Body, S7Pdu, S7PlusPdu, TpktResult, Userdata, UserdataBody, VarAddress, VarSpec,
};
use serde::Serialize;

use super::{hex, Ctx, Dir};

/// The port its servers (PLCs) listen on.
pub const DEFAULT_PORT: u16 = s7::DEFAULT_PORT;
/// The most bytes the dissector may leave unconsumed: one partial TPKT.
pub const MAX_BUFFERED: usize = s7::TPKT_MAX_LEN;
/// Jobs remembered per flow until their ack_data.
pub const MAX_OUTSTANDING: usize = 64;
/// Items listed per event (S7 PDUs carry at most a few dozen).
pub const MAX_ITEMS_PER_EVENT: usize = 256;
/// Items of the jobs remembered per flow until their acks (a job holds at most
/// [`MAX_ITEMS_PER_EVENT`]): 64 jobs of 256 raw items each held 10 MB per flow.
pub const MAX_JOB_ITEMS: usize = 1024;
/// Bytes of an item's value shown (hex) in an event.
pub const MAX_VALUE_BYTES: usize = 64;

/// One item of a read/write job or of its ack_data.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Item {
    /// Syntax id of the address (0x10 S7ANY; others are kept raw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax_id: Option<u8>,
    /// A test job's address (variable status, modify variable, force): its memory area code
    /// as sent (Wireshark's `s7comm.varstat.req.memory_area`); `area` and `transport_size`
    /// say the same as an S7ANY address would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tis_area: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<u16>,
    /// Byte address and bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_size: Option<u8>,
    /// Elements of `transport_size` the job asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// Bytes of data carried (write jobs, read ack_data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_code_name: Option<&'static str>,
    /// The data (at most 64 bytes), written as hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<crate::event::Hex>,
    /// An address with another syntax id, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_address: Option<String>,
    /// The areas of a DBREAD address (syntax id 0xB0), decoded from `raw_address`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dbread: Vec<S7DbRead>,
}

/// One area of a DBREAD address: `length` bytes of DB `db` from byte `start` (Wireshark's
/// `s7comm.param.item.dbread.db`, `.startaddress`, `.length`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct S7DbRead {
    pub db: u16,
    pub start: u16,
    pub length: u8,
}

/// A program block (OB, FB, FC, DB, SDB...) and its number.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Block {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_type: Option<&'static str>,
    pub block_number: u32,
}

/// One record of SZL 0x001C (component identification).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Component {
    pub index: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    pub value: String,
}

/// Userdata parameters and what the data decodes to.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Userdata {
    pub group: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<&'static str>,
    pub subfunction: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subfunction_name: Option<&'static str>,
    /// `request`, `response` or `push`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<&'static str>,
    /// The same, as its code (what detection reads).
    #[serde(skip)]
    pub type_code: Option<otwatch_parsers::s7::UserdataType>,
    pub sequence: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_data_unit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub szl_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub szl_index: Option<u16>,
    /// From SZL 0x0011 (module identification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// From SZL 0x001C (component identification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<S7Component>>,
    /// Block functions / time functions, briefly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A replace job (programmer commands 0x12): the job it carries (modify variable, force
    /// or variable status), whose addresses are the event's `items`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_subfunction: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_subfunction_name: Option<&'static str>,
}

/// The `s7comm` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7Event {
    pub rosctr: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rosctr_name: Option<&'static str>,
    pub pdu_ref: u16,
    /// Parameter function of jobs and acks (absent on userdata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u8>,
    /// Setup communication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdu_length: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_amq_calling: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_amq_called: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<S7Item>,
    /// Block transfer (download / upload): the block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Upload: the id the PLC gave the upload (start_upload ack), on every step of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<u32>,
    /// PI service and PLC stop: the service name (`_INSE`, `_DELE`, `P_PROGRAM`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pi_service: Option<String>,
    /// Blocks named by `_INSE` / `_DELE`: `[{block_type, block_number}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pi_blocks: Vec<S7Block>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userdata: Option<S7Userdata>,
    /// On ack_data matched to its job: the job's frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_frame: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The `s7commplus` object of an event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7PlusEvent {
    pub version: u8,
    pub integrity_protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// `message`, `keep_alive`, `fragment`...
    pub kind: &'static str,
    /// A message (not a keep-alive, fragment or unrecognised body).
    #[serde(skip)]
    pub is_message: bool,
    /// Requests of SetVariable, DeleteObject and Get/SetMultiVariables of an object: the
    /// object (a Get's link id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u32>,
    /// The object is this connection's own: `session` (the first object a CreateObject reply
    /// on this connection handed out; on a connection picked up after that, the session id of
    /// its first request), or `created` (another object the PLC created for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_object: Option<&'static str>,
    /// No CreateObject reply was seen on this connection (picked up after its start).
    #[serde(skip)]
    pub nothing_created: bool,
    /// A request of the session's own life: its creation (in the server session container),
    /// its set-up (ServerSessionVersion set) and its close (itself deleted). Observed as the
    /// one function `session`, whichever of them: an HMI that reconnects after learning does
    /// them all again.
    #[serde(skip)]
    pub session_life: bool,
    /// A request that could not be checked (`joined_message`: split over PDUs, and the joined
    /// message did not decode or was too long to join).
    #[serde(skip)]
    pub malformed: Option<&'static str>,
    /// The object's attributes the request names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<u32>,
    /// Get/SetMultiVariables of PLC variables: their addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<S7PlusItem>,
    /// CreateObject replies: the objects created.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub created_objects: Vec<u32>,
    /// What the request addresses did not decode to its end (`truncated`, `length_mismatch`,
    /// `invalid_value`: a SetVariable of several attributes, whose values are not decoded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The request sets the CPU's operating state request (object 52, attribute 2167; by
    /// SetVariable or SetMultiVariables): a command to stop or start the PLC.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cpu_state_request: bool,
    /// The operating state it asks for, when its value is one integer: 1 stop, 2 reset of the
    /// retentive data, 3 run, 4 run (redundant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_state: Option<i64>,
}

/// A variable (or an object's attribute) a Get/SetMultiVariables request names.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct S7PlusItem {
    /// `DB`, `I`, `Q`, `M`, `C`, `T`, or `object` (the access area is an object's id).
    pub area: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<u16>,
    pub access_area: u32,
    pub symbol_crc: u32,
    /// The access sub-area (a DB's values 0x9F6, I/Q/M/C/T 0xE98, or an attribute) and the
    /// LIDs that follow it.
    pub lids: Vec<u32>,
    /// An object's item: the object is this connection's own (`session`, `created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_object: Option<&'static str>,
    /// The value written (SetMultiVariables) or read (on the GetMultiVariables response, whose
    /// items are its request's), when it is one number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// The `cotp` object of an event: connection setup and teardown.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CotpEvent {
    pub pdu_type: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdu_type_name: Option<&'static str>,
    pub dst_ref: u16,
    pub src_ref: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calling_tsap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called_tsap: Option<String>,
    /// From the called TSAP (the PLC's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpdu_size: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<u8>,
}

#[derive(Debug, Clone)]
struct Job {
    pdu_ref: u16,
    frame: u64,
    items: JobItems,
    /// A start_upload job's block (type, number); boxed, as only uploads have one: a job is
    /// moved into the list and out again for every read and write.
    block: Option<Box<(Option<&'static str>, u32)>>,
}

/// A job's items, held in place for the usual one or two.
type JobItems = smallvec::SmallVec<[JobItem; 2]>;

/// What an ack needs of its job's item: where it points (an ack's items carry no address). A
/// job is remembered for every read and write until its ack: compact, not an event's item.
#[derive(Debug, Clone, Default)]
struct JobItem {
    syntax_id: Option<u8>,
    addr: S7Address,
    /// A raw address (not S7ANY; rare): its text, and the DB reads it names.
    raw: Option<Box<(Option<String>, Vec<S7DbRead>)>>,
}

impl JobItem {
    /// A request's item specification.
    fn spec(spec: &VarSpec<'_>) -> Self {
        let mut item = JobItem::default();
        item.fill(spec);
        item
    }

    /// Makes this (a default item) a request's item specification, field by field where it
    /// is: built apart and moved in, the item was written in pieces and read whole at once (a
    /// store-forwarding stall an item). A raw address (rare) is built apart.
    #[inline(always)]
    fn fill(&mut self, spec: &VarSpec<'_>) {
        match spec.address {
            VarAddress::Any(any) => {
                self.syntax_id = Some(spec.syntax_id.0);
                let a = &mut self.addr;
                a.area = Some(any.area.0);
                a.db = Some(any.db);
                a.address = Some(any.byte_address());
                a.bit = Some(any.bit());
                a.transport_size = Some(any.transport_size.0);
                a.length = Some(u32::from(any.count));
            }
            VarAddress::Raw(raw) => *self = Self::raw_spec(spec, raw),
        }
    }

    /// [`JobItem::spec`] of an address of another syntax than S7ANY: its text, and the DB
    /// reads it names.
    #[cold]
    #[inline(never)]
    fn raw_spec(spec: &VarSpec<'_>, raw: &[u8]) -> Self {
        let dbread = spec.dbread_areas().map_or_else(Vec::new, |areas| {
            areas
                .map(|a| S7DbRead {
                    db: a.db,
                    start: a.start,
                    length: a.length,
                })
                .collect()
        });
        JobItem {
            syntax_id: Some(spec.syntax_id.0),
            raw: Some(Box::new((Some(hex(raw)), dbread))),
            ..Default::default()
        }
    }

    /// The address part of an event's item.
    fn of(item: &S7Item) -> Self {
        JobItem {
            syntax_id: item.syntax_id,
            addr: S7Address::of(item),
            raw: (item.raw_address.is_some() || !item.dbread.is_empty())
                .then(|| Box::new((item.raw_address.clone(), item.dbread.clone()))),
        }
    }

    /// As an event's item, with its address only.
    fn item(&self) -> S7Item {
        let (raw_address, dbread) = match &self.raw {
            Some(raw) => (raw.0.clone(), raw.1.clone()),
            None => (None, Vec::new()),
        };
        let a = self.addr;
        S7Item {
            syntax_id: self.syntax_id,
            area: a.area,
            area_name: a.area.and_then(|a| s7::Area(a).name()),
            db: a.db,
            address: a.address,
            bit: a.bit,
            transport_size: a.transport_size,
            length: a.length,
            raw_address,
            dbread,
            ..Default::default()
        }
    }

    /// As an observation reads an item.
    fn view(&self) -> crate::detection::observe::S7ItemView<'_> {
        crate::detection::observe::S7ItemView {
            addr: self.addr,
            dbread: self.raw.as_ref().map_or(&[], |r| &r.1),
            raw: self
                .syntax_id
                .zip(self.raw.as_ref().and_then(|r| r.0.as_deref())),
            return_code: None,
            bytes: &[],
        }
    }
}

/// The `i`th item of a job (its address, for the ack's `i`th item), if the job was seen.
fn job_item(job: &Option<Job>, i: usize) -> Option<&JobItem> {
    job.as_ref()?.items.get(i)
}

/// Uploads in progress per flow (by upload id), so `upload` and `end_upload` say which block.
pub const MAX_UPLOADS: usize = 16;

/// Largest SZL list reassembled from a response split over several userdata PDUs.
pub const MAX_SZL_LEN: usize = 64 * 1024;
/// Split SZL responses in progress per direction (by data unit reference).
pub const MAX_SZL_IN_PROGRESS: usize = 2;
/// COTP and SZL reassembly memory across all S7 flows of a pipeline; beyond it the message
/// being assembled is dropped (counted).
pub const MAX_REASSEMBLY_BYTES_TOTAL: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct S7Flow {
    resync: [bool; 2],
    cotp: [CotpReassembler; 2],
    jobs: Outstanding<Job>,
    /// Per direction: pieces of SZL responses split over several PDUs, by data unit reference.
    szl: [Vec<(u8, Vec<u8>)>; 2],
    /// Upload id -> the block being uploaded.
    uploads: VecDeque<(u32, (Option<&'static str>, u32))>,
    /// S7comm-plus: the objects the PLC created for this connection, from CreateObject
    /// replies; the latest [`MAX_OWN_OBJECTS`].
    plus_objects: VecDeque<u32>,
    /// S7comm-plus: the session, the first object a CreateObject reply handed out; on a
    /// connection picked up after that, the session id of a request the PLC answered with
    /// success (pinned: a later request cannot name another).
    plus_session: Option<u32>,
    /// Objects CreateObject replies handed out on this connection.
    plus_created: u64,
    /// A connection picked up after its start: requests awaiting their answer, (sequence,
    /// session id named, or `None` when two requests of one sequence named different ones).
    plus_asked: VecDeque<(u16, Option<u32>)>,
    /// The session id answered with success so far, and how many times in a row.
    plus_candidate: Option<(u32, u8)>,
    /// A COTP connection request or confirm was seen: the connection was followed from its
    /// start, and its session is only what a CreateObject reply hands out.
    cotp_connected: bool,
    /// S7comm-plus, per direction: the pieces so far of a message split over several PDUs
    /// (their digests left out), joined when the piece with the trailer comes.
    plus_pieces: [Vec<u8>; 2],
    /// Per direction: skipping the rest of a message too long to join.
    plus_dropping: [bool; 2],
    /// Per direction: the function the first piece of the message being joined names.
    plus_head: [Option<u16>; 2],
    /// S7comm-plus GetMultiVariables requests of PLC variables awaiting their response, by
    /// sequence number: their items, whose values the response carries by item number.
    plus_reads: Outstanding<(u16, Vec<S7PlusItem>)>,
    /// Sequence numbers asked again before their answer came: no answer to them is matched
    /// (the latest [`MAX_OUTSTANDING`]).
    plus_reused: VecDeque<u16>,
}

/// Requests awaiting their answer, each with its items: at most [`MAX_OUTSTANDING`] requests
/// and [`MAX_JOB_ITEMS`] items per flow (an S7comm-plus item's LIDs count as items), the oldest
/// forgotten past either (counted as `outstanding_bound_drops`).
#[derive(Debug)]
struct Outstanding<T> {
    queue: VecDeque<T>,
    /// Items of the requests held.
    items: usize,
}

impl<T> Default for Outstanding<T> {
    fn default() -> Self {
        Outstanding {
            queue: VecDeque::new(),
            items: 0,
        }
    }
}

/// A request held in [`Outstanding`]: its key (S7comm's PDU reference, S7comm-plus' sequence
/// number) and how many items it holds.
trait Held {
    fn key(&self) -> u16;
    fn items(&self) -> usize;
}

impl Held for Job {
    fn key(&self) -> u16 {
        self.pdu_ref
    }
    fn items(&self) -> usize {
        self.items.len()
    }
}

impl Held for (u16, Vec<S7PlusItem>) {
    fn key(&self) -> u16 {
        self.0
    }
    /// An item and each of its LIDs count (a LID path is as long as the message allows).
    fn items(&self) -> usize {
        plus_weight(&self.1)
    }
}

/// What S7comm-plus items weigh in [`Outstanding`]: one each, and one per LID.
fn plus_weight(items: &[S7PlusItem]) -> usize {
    items.iter().map(|i| 1 + i.lids.len()).sum()
}

impl<T: Held> Outstanding<T> {
    /// Holds `request` (replacing one of its key); returns how many older ones it forgot.
    fn remember(&mut self, request: T) -> u64 {
        self.take(request.key());
        self.queue.push_back(request);
        self.held()
    }

    /// The bounds, once the request held last is complete: the oldest others forgotten past
    /// either; returns how many.
    fn held(&mut self) -> u64 {
        let new = self.queue.back().map_or(0, T::items);
        let mut dropped = 0;
        while self.queue.len() > 1
            && (self.queue.len() > MAX_OUTSTANDING || self.items + new > MAX_JOB_ITEMS)
        {
            self.forget(0);
            dropped += 1;
        }
        self.items += new;
        dropped
    }

    fn forget(&mut self, i: usize) -> Option<T> {
        let request = super::take_answered(&mut self.queue, i)?;
        self.items -= request.items();
        Some(request)
    }

    /// The request of `key`, no longer held.
    fn take(&mut self, key: u16) -> Option<T> {
        let i = self.queue.iter().position(|r| r.key() == key)?;
        self.forget(i)
    }
}

/// Each item's value from a value list (item numbers count from 1), when it is one number (a
/// NaN or an infinity too: out of any envelope). Only the values before the first that the
/// PLC may read otherwise ([`s7::PlusValue::Uncertain`]) are given; and, from a list whose walk
/// did not end where the list ends ([`s7::PlusValues::complete`]), only those before the first
/// walked past without a number: after either, the walk may have been misaligned.
fn set_values(items: &mut [S7PlusItem], mut values: s7::PlusValues<'_>) {
    let mut walked = Vec::new();
    for (n, v) in values.by_ref() {
        walked.push((n, v));
        if walked.len() > items.len() {
            break;
        }
    }
    let complete = values.complete();
    let reliable = walked
        .iter()
        .position(|(_, v)| match v {
            s7::PlusValue::Uncertain => true,
            s7::PlusValue::Other => !complete,
            _ => false,
        })
        .unwrap_or(walked.len());
    walked.truncate(reliable);
    for (n, v) in walked {
        let Some(item) = (n as usize).checked_sub(1).and_then(|k| items.get_mut(k)) else {
            continue;
        };
        item.value = match v {
            s7::PlusValue::Int(v) => Some(v as f64),
            s7::PlusValue::Real(v) => Some(v),
            s7::PlusValue::Other | s7::PlusValue::Uncertain => None,
        };
    }
}

/// What an S7comm-plus PDU is to the joining of split messages ([`S7Flow::plus_piece`]).
enum Piece {
    /// A whole message in one PDU, or no message (a keep-alive): dissected alone.
    No,
    /// A piece held (without the trailer): dissected alone too, as a `fragment`.
    Held,
    /// The last piece: the message joined.
    Whole(s7::PlusVersion, Vec<u8>),
    /// The join failed: the message too long (`message_too_long`), the S7 reassembly budget
    /// spent (`reassembly_budget`), or a piece that does not frame (`piece_does_not_frame`).
    /// What was held is dropped.
    Failed(&'static str),
    /// A later piece of a message not joined.
    Dropped,
}

/// Largest S7comm-plus message joined from pieces; a longer one is dropped (counted, and from
/// the client a malformed request: it was not checked). 256 KiB: 256 connections holding one
/// each spend the S7 reassembly budget.
pub const MAX_PLUS_MESSAGE: usize = 256 * 1024;

/// S7comm-plus: the server session container (ObjectServerSessionContainer), in which a
/// CreateObject makes a new session.
pub const SESSION_CONTAINER: u32 = 0x11d;
/// S7comm-plus: the session's attribute a client sets once, right after creating it
/// (ServerSessionVersion, 306).
pub const SESSION_VERSION: u32 = 306;

/// Answers with success in a row that make a session id named by a connection picked up after
/// its start its session.
pub const PIN_ANSWERS: u8 = 3;

/// Objects created for one connection that are remembered as its own.
pub const MAX_OWN_OBJECTS: usize = 64;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(s7::trim_text(data)).into_owned()
}

impl super::Dissector for S7Flow {
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        let d = dir.index();
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            if self.resync[d] {
                match s7::find_tpkt_resync(rest) {
                    Some(skip) => {
                        ctx.stats[S7COMM].resync_skipped_bytes += skip as u64;
                        off += skip;
                        self.resync[d] = false;
                    }
                    None => {
                        let skip = rest.len().saturating_sub(s7::RESYNC_PROBE_LEN - 1);
                        ctx.stats[S7COMM].resync_skipped_bytes += skip as u64;
                        return off + skip;
                    }
                }
                continue;
            }
            match s7::parse_tpkt(rest) {
                TpktResult::Complete { tpkt, consumed } => {
                    self.on_tpdu(ctx, dir, tpkt.tpdu);
                    off += consumed;
                }
                TpktResult::Incomplete { .. } => break,
                TpktResult::Invalid(err) => {
                    ctx.stats[S7COMM].count_error(err.as_str());
                    self.resync[d] = true;
                }
            }
        }
        off
    }

    fn on_gap(&mut self, ctx: &mut Ctx<'_>, dir: Dir) {
        let d = dir.index();
        self.resync[d] = true;
        self.release(ctx, d);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        self.release(ctx, 0);
        self.release(ctx, 1);
    }
}

impl S7Flow {
    /// Drop what one direction holds (a partial COTP message, SZL pieces), with its accounting.
    fn release(&mut self, ctx: &mut Ctx<'_>, d: usize) {
        let szl: usize = self.szl[d].iter().map(|(_, b)| b.len()).sum();
        let held = (self.cotp[d].buffered() + szl) as u64;
        let held = held + self.plus_pieces[d].len() as u64;
        let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
        *gauge = gauge.saturating_sub(held);
        self.cotp[d] = CotpReassembler::new();
        self.szl[d].clear();
        self.plus_pieces[d] = Vec::new();
        self.plus_dropping[d] = false;
    }

    /// An S7comm-plus PDU as a piece of a message split over several, as the s7commwireshark
    /// plugin joins them: a PDU without the trailer starts a message (or continues the one
    /// being joined), and the next PDU with the trailer ends it. Anything else is no piece.
    fn plus_piece(&mut self, ctx: &mut Ctx<'_>, dir: Dir, payload: &[u8]) -> Piece {
        let d = dir.index();
        let Some((version, data, trailer)) = s7::s7plus_piece(payload) else {
            // A data PDU that does not frame as a piece (a V3 piece without its digest) while
            // a message is being joined: the join failed.
            let data_pdu = matches!(payload.get(1), Some(0x01..=0x03));
            if data_pdu && !self.plus_pieces[d].is_empty() {
                let held = std::mem::take(&mut self.plus_pieces[d]);
                let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
                *gauge = gauge.saturating_sub(held.len() as u64);
                return Piece::Failed("piece_does_not_frame");
            }
            return Piece::No;
        };
        if self.plus_dropping[d] {
            // The rest of a message not joined: skipped to its end.
            self.plus_dropping[d] = !trailer;
            return Piece::Dropped;
        }
        let pieces = &mut self.plus_pieces[d];
        if trailer && pieces.is_empty() {
            return Piece::No;
        }
        if pieces.is_empty() {
            // The function the first piece names, for a message that will not decode.
            self.plus_head[d] = (data.first() == Some(&PlusOpcode::REQUEST.0))
                .then(|| data.get(3..5).map(|f| u16::from_be_bytes([f[0], f[1]])))
                .flatten();
        }
        let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
        let too_long = pieces.len() + data.len() > MAX_PLUS_MESSAGE;
        if too_long || *gauge > MAX_REASSEMBLY_BYTES_TOTAL {
            *gauge = gauge.saturating_sub(pieces.len() as u64);
            self.plus_pieces[d] = Vec::new();
            self.plus_dropping[d] = !trailer;
            if too_long {
                ctx.stats[S7COMMPLUS].count("message_reassembly_bound_drops");
                return Piece::Failed("message_too_long");
            }
            ctx.stats[S7COMM].count("reassembly_budget_drops");
            return Piece::Failed("reassembly_budget");
        }
        pieces.extend_from_slice(data);
        *gauge += data.len() as u64;
        if !trailer {
            return Piece::Held;
        }
        let whole = std::mem::take(pieces);
        *gauge = gauge.saturating_sub(whole.len() as u64);
        Piece::Whole(version, whole)
    }

    /// A message joined from pieces, dissected as one PDU of `version` (stamped with the frame
    /// of its last piece). One that does not decode, or was too long to join, is an event
    /// with its `error`; from the client, a malformed request (it was not checked).
    fn on_joined_plus(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Dir,
        version: s7::PlusVersion,
        whole: Result<&[u8], &'static str>,
    ) {
        let error = match whole.map(s7::parse_s7plus_message) {
            Ok(Ok(body)) => {
                ctx.stats[S7COMMPLUS].count("joined_messages");
                let pdu = S7PlusPdu {
                    version,
                    data_len: 0,
                    has_trailer: true,
                    body,
                };
                return self.on_s7plus(ctx, dir, &pdu);
            }
            Ok(Err(e)) => {
                ctx.stats[S7COMMPLUS].count_error("joined_message");
                e.kind.as_str()
            }
            Err(e) => e,
        };
        if !ctx.sink.wants_events() {
            return;
        }
        let ev = S7PlusEvent {
            version: version.0,
            integrity_protected: version == s7::PlusVersion::V3,
            opcode: (dir == Dir::ToServer).then_some(PlusOpcode::REQUEST.0),
            opcode_name: (dir == Dir::ToServer).then_some("request"),
            function: self.plus_head[dir.index()],
            function_name: self.plus_head[dir.index()].and_then(|f| PlusFunction(f).name()),
            kind: "message",
            error: Some(error),
            // A budget spent is the monitor's limit, counted, not the message's fault.
            malformed: (dir == Dir::ToServer && error != "reassembly_budget")
                .then_some("joined_message"),
            is_message: dir == Dir::ToServer,
            ..Default::default()
        };
        self.emit_plus(ctx, dir, ev);
    }

    fn on_tpdu(&mut self, ctx: &mut Ctx<'_>, dir: Dir, tpdu: &[u8]) {
        // Read in place (moved out, the parser's record was copied whole just after it was
        // written field by field: a store-forwarding stall a TPDU).
        let parsed = s7::parse_cotp(tpdu);
        let cotp = match &parsed {
            Ok(c) => c,
            Err(err) => {
                ctx.stats[S7COMM].count_error(err.kind.as_str());
                return;
            }
        };
        ctx.stats[S7COMM].count("cotp_tpdus");
        match cotp.body {
            CotpBody::Data { payload, eot, .. } => {
                let d = dir.index();
                // The reassembler is taken out while its output is dissected (no copy).
                let mut r = std::mem::take(&mut self.cotp[d]);
                let before = r.buffered() as u64;
                let mut release = false;
                match r.push(payload, eot) {
                    Reassembled::Complete(tsdu) => {
                        // A message of several TPDUs grew the buffer: give the memory back.
                        release = tsdu.as_ptr() != payload.as_ptr();
                        self.on_payload(ctx, dir, tsdu);
                    }
                    Reassembled::InProgress => {}
                    Reassembled::Discarded(reason) => ctx.stats[S7COMM].count(reason.as_str()),
                }
                let held = &mut ctx.stats.tcp.s7_reassembly_bytes;
                *held = (*held + r.buffered() as u64).saturating_sub(before);
                if *held > MAX_REASSEMBLY_BYTES_TOTAL {
                    *held = held.saturating_sub(r.buffered() as u64);
                    release = true;
                    ctx.stats[S7COMM].count("reassembly_budget_drops");
                }
                self.cotp[d] = if release { CotpReassembler::new() } else { r };
            }
            _ => self.cotp_control(ctx, dir, cotp),
        }
    }

    /// A COTP TPDU that carries no data (connection set-up and release): its event. Out of line
    /// (rare, once per connection), so that the data path stays on few instruction cache lines.
    #[inline(never)]
    fn cotp_control(&mut self, ctx: &mut Ctx<'_>, dir: Dir, cotp: &s7::CotpTpdu<'_>) {
        let mut ev = CotpEvent {
            pdu_type: cotp.pdu_type.0,
            pdu_type_name: cotp.pdu_type.name(),
            ..Default::default()
        };
        match cotp.body {
            CotpBody::ConnectionRequest(c) | CotpBody::ConnectionConfirm(c) => {
                self.cotp_connected = true;
                connection(&mut ev, &c)
            }
            CotpBody::DisconnectRequest {
                dst_ref,
                src_ref,
                reason,
                ..
            } => {
                (ev.dst_ref, ev.src_ref, ev.reason) = (dst_ref, src_ref, Some(reason));
            }
            CotpBody::DisconnectConfirm {
                dst_ref, src_ref, ..
            } => {
                (ev.dst_ref, ev.src_ref) = (dst_ref, src_ref);
            }
            _ => return,
        }
        if ctx.sink.wants_events() {
            let mut event = ctx.event("cotp", dir);
            event.pdu = crate::event::Pdu::Cotp(ev);
            ctx.emit(event);
        }
    }

    fn on_payload(&mut self, ctx: &mut Ctx<'_>, dir: Dir, payload: &[u8]) {
        if payload.first() == Some(&s7::S7PLUS_PROTOCOL_ID) {
            match self.plus_piece(ctx, dir, payload) {
                Piece::No | Piece::Held => {}
                Piece::Whole(version, whole) => {
                    return self.on_joined_plus(ctx, dir, version, Ok(&whole))
                }
                Piece::Failed(why) => {
                    let version = s7::PlusVersion(payload.get(1).copied().unwrap_or(0));
                    return self.on_joined_plus(ctx, dir, version, Err(why));
                }
                Piece::Dropped => return,
            }
        }
        // Each protocol's parser is called and its PDU read in place: through
        // `parse_s7_payload`'s enum, every PDU was copied twice (6% of steady-site's
        // dissection, in `memcpy`).
        let failed = match payload.first() {
            None | Some(&s7::S7COMM_PROTOCOL_ID) => match &s7::parse_s7comm(payload) {
                Ok(pdu) => return self.on_s7comm(ctx, dir, pdu),
                Err(err) => *err,
            },
            Some(&s7::S7PLUS_PROTOCOL_ID) => match &s7::parse_s7plus(payload) {
                Ok(pdu) => return self.on_s7plus(ctx, dir, pdu),
                Err(err) => *err,
            },
            // Another ISO-on-TCP user (MMS, ICCP, RDP's X.224 data...): not decoded.
            Some(_) => return ctx.stats[S7COMM].count("other_iso_payloads"),
        };
        self.payload_failed(ctx, dir, payload, failed);
    }

    /// A payload whose S7comm or S7comm-plus PDU did not parse: counted, and for S7comm an
    /// event of what its header says. Out of line (rare), as [`S7Flow::cotp_control`].
    #[inline(never)]
    fn payload_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Dir,
        payload: &[u8],
        failed: otwatch_parsers::s7::S7Error,
    ) {
        let proto = if payload.first() == Some(&s7::S7PLUS_PROTOCOL_ID) {
            &mut ctx.stats[S7COMMPLUS]
        } else {
            &mut ctx.stats[S7COMM]
        };
        proto.count_error(failed.kind.as_str());
        if ctx.sink.wants_events() && payload.first() == Some(&s7::S7COMM_PROTOCOL_ID) {
            let mut event = ctx.event("s7comm", dir);
            let header = s7::S7Header::read(payload);
            // The function is the parameter's first byte: a job the rest of which does
            // not parse (a PLC stop with a byte too many) is still the job it says.
            let function = header
                .filter(|h| h.rosctr != s7::Rosctr::USERDATA && h.param_len > 0)
                .and_then(|h| payload.get(h.header_len()))
                .map(|&f| s7::FunctionCode(f));
            event.pdu = crate::event::Pdu::S7comm(S7Event {
                rosctr: header.map_or(0, |h| h.rosctr.0),
                rosctr_name: header.and_then(|h| h.rosctr.name()),
                pdu_ref: header.map_or(0, |h| h.pdu_ref),
                function: function.map(|f| f.0),
                function_name: function.and_then(|f| f.name()),
                error: Some(failed.kind.as_str()),
                ..Default::default()
            });
            ctx.emit(event);
        }
    }

    fn on_s7comm(&mut self, ctx: &mut Ctx<'_>, dir: Dir, pdu: &S7Pdu<'_>) {
        let h = &pdu.header;
        let function = pdu.function();
        // PDUs by parameter function; userdata (no parameter function) and bare acks apart.
        match (h.rosctr, function) {
            (_, Some(f)) => ctx.stats[S7COMM].count_pdu(f.0),
            (s7::Rosctr::USERDATA, None) => ctx.stats[S7COMM].count_other_pdu("userdata"),
            _ => ctx.stats[S7COMM].count_other_pdu("ack"),
        }
        if h.error.is_some_and(|e| e.is_error()) {
            ctx.stats[S7COMM].exceptions += 1;
        }
        if !ctx.sink.wants_events() {
            return;
        }
        if !ctx.wants_event_out() && ctx.wants_observations() && self.var_observation(ctx, dir, pdu)
        {
            return;
        }
        self.s7comm_event(ctx, dir, pdu);
    }

    /// The event of an S7comm PDU ([`S7Flow::on_s7comm`]). Out of line: with detection and no
    /// events output, most PDUs (read and write jobs and their acks) take
    /// [`S7Flow::var_observation`] instead, and this code, as large again as the rest, spread
    /// their path over twice the instruction cache lines.
    #[inline(never)]
    fn s7comm_event(&mut self, ctx: &mut Ctx<'_>, dir: Dir, pdu: &S7Pdu<'_>) {
        let h = &pdu.header;
        let function = pdu.function();
        // Item values only when something reads them (per-channel metrics need the addresses).
        let detail = ctx.sink.wants_detail();
        let mut ev = S7Event {
            rosctr: h.rosctr.0,
            rosctr_name: h.rosctr.name(),
            pdu_ref: h.pdu_ref,
            function: function.map(|f| f.0),
            function_name: function.and_then(|f| f.name()),
            error_class: h.error.map(|e| e.class.0),
            error_code: h.error.map(|e| e.code),
            ..Default::default()
        };
        match &pdu.body {
            S7Body::SetupCommunication(s) => {
                ev.pdu_length = Some(s.pdu_length);
                ev.max_amq_calling = Some(s.max_amq_calling);
                ev.max_amq_called = Some(s.max_amq_called);
            }
            S7Body::ReadVarRequest { items } => {
                ev.items = items
                    .iter()
                    .take(MAX_ITEMS_PER_EVENT)
                    .map(|s| spec_item(&s))
                    .collect_items();
                let addresses = ev.items.iter().map(JobItem::of).collect();
                self.remember(ctx, h.pdu_ref, addresses);
            }
            S7Body::WriteVarRequest { items, values } => {
                ev.items = items
                    .iter()
                    .zip(values.iter())
                    .take(MAX_ITEMS_PER_EVENT)
                    .map(|(s, v)| {
                        let mut item = spec_item(&s);
                        data_into(&mut item, &v, detail);
                        item
                    })
                    .collect_items();
                let addresses = ev.items.iter().map(JobItem::of).collect();
                self.remember(ctx, h.pdu_ref, addresses);
            }
            S7Body::ReadVarResponse { items } => {
                let job = self.take(h.pdu_ref);
                ev.request_frame = job.as_ref().map(|j| j.frame);
                ev.items = items
                    .iter()
                    .take(MAX_ITEMS_PER_EVENT)
                    .enumerate()
                    .map(|(i, v)| {
                        let mut item = job_item(&job, i).map(JobItem::item).unwrap_or_default();
                        data_into(&mut item, &v, detail);
                        item
                    })
                    .collect_items();
            }
            S7Body::WriteVarResponse { return_codes } => {
                let job = self.take(h.pdu_ref);
                ev.request_frame = job.as_ref().map(|j| j.frame);
                ev.items = return_codes
                    .iter()
                    .take(MAX_ITEMS_PER_EVENT)
                    .enumerate()
                    .map(|(i, rc)| {
                        let mut item = job_item(&job, i).map(JobItem::item).unwrap_or_default();
                        item.return_code = Some(rc.0);
                        item.return_code_name = rc.name();
                        item
                    })
                    .collect_items();
            }
            S7Body::BlockControl(b) => {
                if let Some(file) = &b.file {
                    ev.filename = Some(text(file.name));
                    if let Some(block) = file.block {
                        ev.block_type = block.block_type.name();
                        ev.block_number = Some(block.number);
                    }
                }
                ev.upload_id = b.upload_id;
                self.track_upload(ctx, h.rosctr, &mut ev);
            }
            S7Body::PiService(pi) => {
                ev.pi_service = Some(text(pi.service));
                if let Some(blocks) = pi.blocks() {
                    ev.pi_blocks = blocks
                        .iter()
                        .flatten()
                        .map(|b| S7Block {
                            block_type: b.block_type.name(),
                            block_number: b.number,
                        })
                        .collect();
                }
            }
            S7Body::PlcStop(stop) => {
                ev.pi_service = Some(text(stop.service));
            }
            S7Body::Userdata(u) => {
                let mut out = userdata(u);
                self.join_szl(ctx, dir, u, &mut out);
                ev.userdata = Some(out);
                if let UserdataBody::Tis(job) = &u.body {
                    ev.items = tis_items(job, detail);
                }
            }
            _ => {}
        }
        let mut event = ctx.event("s7comm", dir);
        event.pdu = crate::event::Pdu::S7comm(ev);
        ctx.emit(event);
    }

    /// The observation of a read or write job or of its ack, straight from the parser's items
    /// (detection without an events output), handed to the sink: what detection makes of the
    /// event, without building the event's items. Jobs are remembered and taken as for the
    /// event. `false`, and nothing done, for other PDUs.
    fn var_observation(&mut self, ctx: &mut Ctx<'_>, dir: Dir, pdu: &S7Pdu<'_>) -> bool {
        use crate::detection::observe::{s7 as observe_s7, S7Head, S7ItemView};
        if !matches!(
            pdu.body,
            S7Body::ReadVarRequest { .. }
                | S7Body::WriteVarRequest { .. }
                | S7Body::ReadVarResponse { .. }
                | S7Body::WriteVarResponse { .. }
        ) {
            return false;
        }
        let h = &pdu.header;
        let function = pdu.function();
        let head = S7Head {
            rosctr: h.rosctr.0,
            pdu_ref: h.pdu_ref,
            function: function.map(|f| f.0),
            function_name: function.and_then(|f| f.name()),
            error_class: h.error.map(|e| e.class.0),
            error: None,
            userdata: None,
            pi_service: None,
        };
        let detail = ctx.sink.wants_detail();
        let shown = |data: &'_ [u8]| -> usize {
            if detail {
                data.len().min(MAX_VALUE_BYTES)
            } else {
                0
            }
        };
        let mut o = ctx.observation(otwatch_models::Proto::S7comm, 0, dir, 0);
        if detail
            && matches!(
                pdu.body,
                S7Body::WriteVarRequest { .. } | S7Body::ReadVarResponse { .. }
            )
        {
            // Room at once for the data the header claims, as the bytes the byte runs (the
            // usual S7 read) are held as: a box without room (a new one) grew its values four
            // or five times. At most what a kept spare may hold. A read of WORDs, INTs or REALs
            // makes its numbers' room as they come.
            let claimed = usize::from(h.data_len).min(otwatch_models::obs::BYTES_AT_ONCE);
            o.bytes.reserve(claimed);
        }
        let none = JobItem::default();
        match &pdu.body {
            S7Body::ReadVarRequest { items } => {
                let job = self.new_job(ctx.frame, h.pdu_ref);
                job_items(job, items.iter());
                observe_s7(&head, job.iter().map(JobItem::view), &mut o);
                self.job_held(ctx);
            }
            S7Body::WriteVarRequest { items, values } => {
                let job = self.new_job(ctx.frame, h.pdu_ref);
                job_items(job, items.iter().zip(values.iter()).map(|(s, _)| s));
                let views = job.iter().zip(values.iter()).map(|(a, v)| S7ItemView {
                    return_code: Some(v.return_code.0),
                    bytes: &v.data[..shown(v.data)],
                    ..a.view()
                });
                observe_s7(&head, views, &mut o);
                self.job_held(ctx);
            }
            S7Body::ReadVarResponse { items } => {
                let job = self.take(h.pdu_ref);
                let views = items
                    .iter()
                    .take(MAX_ITEMS_PER_EVENT)
                    .enumerate()
                    .map(|(i, v)| S7ItemView {
                        return_code: Some(v.return_code.0),
                        bytes: &v.data[..shown(v.data)],
                        ..job_item(&job, i).unwrap_or(&none).view()
                    });
                observe_s7(&head, views, &mut o);
            }
            S7Body::WriteVarResponse { return_codes } => {
                let job = self.take(h.pdu_ref);
                let views = return_codes
                    .iter()
                    .take(MAX_ITEMS_PER_EVENT)
                    .enumerate()
                    .map(|(i, rc)| S7ItemView {
                        return_code: Some(rc.0),
                        ..job_item(&job, i).unwrap_or(&none).view()
                    });
                observe_s7(&head, views, &mut o);
            }
            // Not reached: the bodies above are the ones checked at the start.
            _ => return false,
        }
        ctx.emit_observed(dir, o);
        true
    }

    /// An SZL response split over several PDUs (same data unit reference, "last data unit"
    /// clear until the last): hold the pieces, and describe the list once, when it is whole.
    fn join_szl(&mut self, ctx: &mut Ctx<'_>, dir: Dir, u: &Userdata<'_>, out: &mut S7Userdata) {
        let p = &u.param;
        let is_szl_response = p.group == s7::FunctionGroup::CPU_FUNCTIONS
            && p.subfunction == s7::Subfunction::READ_SZL
            && p.kind == s7::UserdataType::RESPONSE;
        if matches!(u.body, UserdataBody::SzlRequest { .. }) {
            // A new request naming a list (a request for the next piece names none): pieces of
            // an earlier answer will not be continued.
            let other = 1 - dir.index();
            let szl: usize = self.szl[other].iter().map(|(_, b)| b.len()).sum();
            let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
            *gauge = gauge.saturating_sub(szl as u64);
            self.szl[other].clear();
            return;
        }
        let (Some(dur), Some(data)) = (p.data_unit_ref, u.data) else {
            return;
        };
        if !is_szl_response {
            return;
        }
        let pieces = &mut self.szl[dir.index()];
        let held = pieces.iter().position(|(d, _)| *d == dur);
        let more = p.last_data_unit == Some(false);
        match (held, more) {
            (None, false) => {}
            (None, true) => {
                if pieces.len() >= MAX_SZL_IN_PROGRESS {
                    let (_, old) = pieces.remove(0);
                    let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
                    *gauge = gauge.saturating_sub(old.len() as u64);
                    ctx.stats[S7COMM].count("szl_reassembly_bound_drops");
                }
                // The first piece counts against the total as the ones after it do.
                if data.data.len() > MAX_SZL_LEN
                    || ctx.stats.tcp.s7_reassembly_bytes > MAX_REASSEMBLY_BYTES_TOTAL
                {
                    ctx.stats[S7COMM].count("szl_reassembly_bound_drops");
                    clear_szl(out);
                    return;
                }
                pieces.push((dur, data.data.to_vec()));
                ctx.stats.tcp.s7_reassembly_bytes += data.data.len() as u64;
                clear_szl(out);
            }
            (Some(i), _) => {
                let buf = &mut pieces[i].1;
                let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
                if buf.len() + data.data.len() > MAX_SZL_LEN || *gauge > MAX_REASSEMBLY_BYTES_TOTAL
                {
                    *gauge = gauge.saturating_sub(buf.len() as u64);
                    pieces.remove(i);
                    ctx.stats[S7COMM].count("szl_reassembly_bound_drops");
                    clear_szl(out);
                    return;
                }
                buf.extend_from_slice(data.data);
                *gauge += data.data.len() as u64;
                clear_szl(out);
                if !more {
                    let (_, whole) = pieces.remove(i);
                    let gauge = &mut ctx.stats.tcp.s7_reassembly_bytes;
                    *gauge = gauge.saturating_sub(whole.len() as u64);
                    if let Some(list) = s7::SzlList::parse(&whole, false) {
                        describe_szl(out, &list);
                    }
                }
            }
        }
    }

    fn remember(&mut self, ctx: &mut Ctx<'_>, pdu_ref: u16, items: JobItems) {
        let frame = ctx.frame;
        self.remember_job(
            ctx,
            Job {
                pdu_ref,
                frame,
                items,
                block: None,
            },
        );
    }

    /// Keeps a job until its ack ([`Outstanding`]).
    fn remember_job(&mut self, ctx: &mut Ctx<'_>, job: Job) {
        ctx.stats[S7COMM].outstanding_bound_drops += self.jobs.remember(job);
    }

    /// A read or write job of `pdu_ref`, sent in `frame`, kept until its ack as
    /// [`S7Flow::remember`] keeps one, its items to be filled in where it is kept; then
    /// [`S7Flow::job_held`]. Built apart and moved in, a job was written in pieces and copied
    /// whole twice on its way (a store-forwarding stall a job).
    fn new_job(&mut self, frame: u64, pdu_ref: u16) -> &mut JobItems {
        let jobs = &mut self.jobs;
        jobs.take(pdu_ref);
        // Written where it is kept: `push_back` built it on the stack and copied it in.
        jobs.queue.extend(std::iter::once_with(|| Job {
            pdu_ref,
            frame,
            items: JobItems::new(),
            block: None,
        }));
        let last = jobs.queue.len() - 1;
        &mut jobs.queue[last].items
    }

    /// The job [`S7Flow::new_job`] made is complete: the bounds on jobs kept.
    fn job_held(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats[S7COMM].outstanding_bound_drops += self.jobs.held();
    }

    /// Ties the steps of an upload together: the start_upload job names the block, its ack
    /// the upload id; upload and end_upload carry only the id.
    fn track_upload(&mut self, ctx: &mut Ctx<'_>, rosctr: s7::Rosctr, ev: &mut S7Event) {
        let function = ev.function.map(s7::FunctionCode);
        match (rosctr, function) {
            (s7::Rosctr::JOB, Some(s7::FunctionCode::START_UPLOAD)) => {
                let job = Job {
                    pdu_ref: ev.pdu_ref,
                    frame: ctx.frame,
                    items: JobItems::new(),
                    block: ev.block_number.map(|n| Box::new((ev.block_type, n))),
                };
                self.remember_job(ctx, job);
            }
            (s7::Rosctr::ACK_DATA, Some(s7::FunctionCode::START_UPLOAD)) => {
                let job = self.take(ev.pdu_ref);
                ev.request_frame = job.as_ref().map(|j| j.frame);
                if let (Some(id), Some(block)) =
                    (ev.upload_id, job.and_then(|j| j.block.map(|b| *b)))
                {
                    (ev.block_type, ev.block_number) = (block.0, Some(block.1));
                    if self.uploads.len() >= MAX_UPLOADS {
                        self.uploads.pop_front();
                    }
                    self.uploads.push_back((id, block));
                }
            }
            (_, Some(s7::FunctionCode::UPLOAD | s7::FunctionCode::END_UPLOAD)) => {
                let found = ev
                    .upload_id
                    .and_then(|id| self.uploads.iter().find(|(u, _)| *u == id))
                    .map(|(_, b)| *b);
                if let (Some(block), None) = (found, ev.block_number) {
                    (ev.block_type, ev.block_number) = (block.0, Some(block.1));
                }
                if rosctr == s7::Rosctr::ACK_DATA && function == Some(s7::FunctionCode::END_UPLOAD)
                {
                    if let Some(id) = ev.upload_id {
                        self.uploads.retain(|(u, _)| *u != id);
                    }
                }
            }
            _ => {}
        }
    }

    fn take(&mut self, pdu_ref: u16) -> Option<Job> {
        self.jobs.take(pdu_ref)
    }
}

fn connection(ev: &mut CotpEvent, c: &CotpConnection<'_>) {
    ev.dst_ref = c.dst_ref;
    ev.src_ref = c.src_ref;
    ev.calling_tsap = c.calling_tsap().map(|t| hex(t.bytes()));
    ev.called_tsap = c.called_tsap().map(|t| hex(t.bytes()));
    if let Some(rs) = c.called_tsap().and_then(|t| t.rack_slot()) {
        ev.rack = Some(rs.rack);
        ev.slot = Some(rs.slot);
    }
    ev.tpdu_size = c.tpdu_size();
}

/// Room to make at once for the items of a PDU whose item iterator hints `hint`: the parsers'
/// item iterators know how many the PDU claims but not how many will parse, so a plain
/// `collect` started small and grew two or three times per PDU. At most 32 (a claim is the
/// sender's). Used for events' items, jobs' items and observations' accesses.
pub(crate) fn claimed_room(hint: (usize, Option<usize>)) -> usize {
    hint.1.unwrap_or(hint.0).min(32)
}

/// Fills in a job's items (at most `MAX_ITEMS_PER_EVENT`; `job` empty), with room for as many as
/// the PDU claims; each filled in its place ([`JobItem::fill`]).
fn job_items<'a>(job: &mut JobItems, specs: impl Iterator<Item = VarSpec<'a>>) {
    // Room asked for only past the inline room: made with a capacity, the list came back
    // through memory from a call and was read whole just after it was written in pieces.
    let room = claimed_room(specs.size_hint());
    if room > job.inline_size() {
        job.reserve_exact(room);
    }
    for spec in specs.take(MAX_ITEMS_PER_EVENT) {
        job.push(JobItem::default());
        if let Some(item) = job.last_mut() {
            item.fill(&spec);
        }
    }
    // A job is kept until its ack: no room kept for items a PDU claimed and did not carry.
    if job.spilled() && job.len() < job.capacity() {
        job.shrink_to_fit();
    }
}

/// Collecting a PDU's items with room for them at once ([`claimed_room`]).
trait CollectItems: Iterator<Item = S7Item> + Sized {
    fn collect_items(self) -> Vec<S7Item> {
        let mut items = Vec::with_capacity(claimed_room(self.size_hint()));
        items.extend(self);
        items
    }
}

impl<I: Iterator<Item = S7Item>> CollectItems for I {}

/// An event's item for a request's item specification: its address.
fn spec_item(spec: &VarSpec<'_>) -> S7Item {
    JobItem::spec(spec).item()
}

/// The items of a variable status, modify variable or force job: each TIS address as the S7ANY
/// address of the same memory (area, transport size, DB, byte address, bit, elements), its
/// code as sent in `tis_area`, and for modify and force the value written.
fn tis_items(job: &s7::TisJob<'_>, detail: bool) -> Vec<S7Item> {
    let mut values = job.values.iter();
    job.iter()
        .take(MAX_ITEMS_PER_EVENT)
        .map(|a| {
            let area = a.area.area();
            let mut item = S7Item {
                tis_area: Some(a.area.0),
                area: area.map(|x| x.0),
                area_name: area.and_then(|x| x.name()),
                db: Some(a.db),
                address: Some(u32::from(a.start)),
                bit: a.bit(),
                transport_size: a.area.transport_size().map(|t| t.0),
                length: Some(u32::from(a.count())),
                ..Default::default()
            };
            if let Some(v) = values.next() {
                value_into(&mut item, v.return_code, v.data, detail);
            }
            item
        })
        .collect_items()
}

fn data_into(item: &mut S7Item, data: &DataItem<'_>, detail: bool) {
    value_into(item, data.return_code, data.data, detail);
}

/// An item's data: its length, return code and (`detail`) its first bytes.
fn value_into(item: &mut S7Item, return_code: s7::ReturnCode, data: &[u8], detail: bool) {
    item.data_length = Some(data.len() as u32);
    item.return_code = Some(return_code.0);
    item.return_code_name = return_code.name();
    if detail && !data.is_empty() {
        let shown = &data[..data.len().min(MAX_VALUE_BYTES)];
        item.value = Some(crate::event::Hex::from(shown));
    }
}

fn userdata(u: &Userdata<'_>) -> S7Userdata {
    let p = &u.param;
    let mut out = S7Userdata {
        group: p.group.0,
        group_name: p.group.name(),
        subfunction: p.subfunction.0,
        subfunction_name: p.subfunction.name_in(p.group),
        r#type: p.kind.name(),
        type_code: Some(p.kind),
        sequence: p.sequence,
        last_data_unit: p.last_data_unit,
        error_code: p.error_code.map(|e| e.0),
        return_code: u.data.map(|d| d.return_code.0),
        ..Default::default()
    };
    match &u.body {
        UserdataBody::SzlRequest { id, index } => {
            out.szl_id = Some(id.0);
            out.szl_index = Some(*index);
        }
        UserdataBody::SzlResponse(list) => describe_szl(&mut out, list),
        UserdataBody::BlockInfoRequest(block) => {
            out.detail = Some(format!(
                "{}{}",
                block.block_type.name().unwrap_or("block"),
                block.number
            ));
        }
        UserdataBody::Tis(job) if job.function != p.subfunction => {
            out.job_subfunction = Some(job.function.0);
            out.job_subfunction_name = job.function.name_in(p.group);
        }
        UserdataBody::Clock(t) => {
            out.detail = Some(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.millisecond
            ));
        }
        _ => {}
    }
    out
}

fn clear_szl(out: &mut S7Userdata) {
    out.szl_id = None;
    out.szl_index = None;
    out.order_number = None;
    out.firmware_version = None;
    out.components = None;
}

/// The SZL list's id and index, and the identity it reveals (module and component
/// identification: order number, firmware, module name, serial number...).
fn describe_szl(out: &mut S7Userdata, list: &s7::SzlList<'_>) {
    out.szl_id = Some(list.id.0);
    out.szl_index = Some(list.index);
    out.order_number = list.order_number().map(text);
    out.firmware_version = list.firmware_version().map(|v| v.to_string());
    if let Some(records) = list.component_identification() {
        out.components = Some(
            records
                .iter()
                .map(|r| S7Component {
                    index: r.index,
                    name: component_name(r.index),
                    value: text(r.text()),
                })
                .collect(),
        );
    }
}

/// Names of the SZL 0x001C component identification records.
fn component_name(index: u16) -> Option<&'static str> {
    Some(match index {
        1 => "automation_system_name",
        2 => "module_name",
        3 => "plant_designation",
        4 => "copyright",
        5 => "serial_number",
        7 => "module_type_name",
        8 => "memory_card_serial_number",
        9 => "manufacturer_and_profile",
        10 => "oem_id",
        11 => "location",
        _ => return None,
    })
}

impl S7Flow {
    fn on_s7plus(&mut self, ctx: &mut Ctx<'_>, dir: Dir, pdu: &S7PlusPdu<'_>) {
        let message = pdu.message();
        match message.and_then(|m| m.function) {
            Some(f) => ctx.stats[S7COMMPLUS].count(f.name().unwrap_or("other_function")),
            None => ctx.stats[S7COMMPLUS].count("without_function"),
        }
        ctx.stats[S7COMMPLUS].count_pdu(message.map_or(0, |m| m.opcode.0));
        // The objects the PLC creates for this connection are its own: changing or deleting
        // them (closing the session, a subscription's settings) writes nothing of the plant's.
        let mut created = Vec::new();
        if let Some(m) = message.filter(|m| {
            dir == Dir::ToClient
                && m.function == Some(PlusFunction::CREATE_OBJECT)
                && m.opcode != PlusOpcode::REQUEST
        }) {
            if let Some(ids) = s7::created_objects(m.payload) {
                for id in ids {
                    // The first object handed out is the session, unless one is known.
                    if self.plus_session.is_none() {
                        self.plus_session = Some(id);
                    }
                    self.plus_created += 1;
                    if self.plus_objects.len() == MAX_OWN_OBJECTS {
                        self.plus_objects.pop_front();
                    }
                    self.plus_objects.push_back(id);
                    created.push(id);
                }
            }
        }
        // A connection picked up after its start (no COTP connection seen, nothing created):
        // its session is one its requests name that the PLC answers with success.
        if let Some(m) = message.filter(|_| self.plus_session.is_none() && !self.cotp_connected) {
            self.plus_pin(dir, m);
        }
        if !ctx.sink.wants_events() {
            return;
        }
        let kind = match pdu.body {
            s7::S7PlusBody::KeepAlive { .. } => "keep_alive",
            s7::S7PlusBody::ExtendedKeepAlive(_) => "extended_keep_alive",
            s7::S7PlusBody::Message(_) => "message",
            s7::S7PlusBody::Fragment(_) => "fragment",
            s7::S7PlusBody::Unrecognized(_) => "unrecognized",
        };
        let mut ev = S7PlusEvent {
            version: pdu.version.0,
            integrity_protected: pdu.is_integrity_protected(),
            opcode: message.map(|m| m.opcode.0),
            opcode_name: message.and_then(|m| m.opcode.name()),
            function: message.and_then(|m| m.function).map(|f| f.0),
            function_name: message.and_then(|m| m.function).and_then(|f| f.name()),
            sequence: message.and_then(|m| m.sequence),
            session_id: message.and_then(|m| m.session_id),
            kind,
            is_message: message.is_some(),
            created_objects: created,
            ..Default::default()
        };
        if let Some(m) = message.filter(|m| {
            dir == Dir::ToClient
                && m.opcode == PlusOpcode::RESPONSE
                && m.function == Some(PlusFunction::GET_MULTI_VARIABLES)
        }) {
            self.plus_read_values(&m, &mut ev);
        }
        if let Some(m) = message.filter(|m| m.opcode == PlusOpcode::REQUEST) {
            self.plus_target(&m, &mut ev);
            if dir == Dir::ToServer {
                self.remember_read(ctx, &m, &ev);
            }
            if m.function == Some(PlusFunction::SET_MULTI_VARIABLES) {
                if let Some(values) = s7::set_multi_values(m.payload) {
                    set_values(&mut ev.items, values);
                }
            }
            // The session's own life: created (CreateObject in the server session container,
            // 0x11D), set up (its ServerSessionVersion set) and closed (itself deleted).
            let create_session = m.function == Some(PlusFunction::CREATE_OBJECT)
                && m.payload.get(..4) == Some(&SESSION_CONTAINER.to_be_bytes()[..]);
            let on_session = ev.own_object == Some("session") && ev.error.is_none();
            let set_up = m.function == Some(PlusFunction::SET_MULTI_VARIABLES)
                && ev.attributes == [SESSION_VERSION];
            let close = m.function == Some(PlusFunction::DELETE_OBJECT);
            ev.session_life = create_session || on_session && (set_up || close);
        }
        self.emit_plus(ctx, dir, ev);
    }

    /// Detection without an events output: the observation without the event (a keep-alive,
    /// which makes none, is only counted as an event).
    fn emit_plus(&self, ctx: &mut Ctx<'_>, dir: Dir, ev: S7PlusEvent) {
        let what = (otwatch_models::Proto::S7commplus, "s7commplus");
        let fill = crate::detection::observe::s7plus;
        ctx.emit_record(dir, what, ev, fill, crate::event::Pdu::S7commplus);
    }

    /// On a connection picked up after its start, the session is the id its requests name
    /// that the PLC answered with success [`PIN_ANSWERS`] times in a row, each answer matched
    /// to one request of its sequence number (two requests of one sequence naming different
    /// ids confirm nothing).
    fn plus_pin(&mut self, dir: Dir, m: s7::S7PlusMessage<'_>) {
        let Some(seq) = m.sequence else { return };
        match (dir, m.opcode) {
            (Dir::ToServer, PlusOpcode::REQUEST) => {
                match self.plus_asked.iter_mut().find(|(s, _)| *s == seq) {
                    Some((_, named)) if *named != m.session_id => *named = None,
                    Some(_) => {}
                    None => {
                        if self.plus_asked.len() == MAX_OWN_OBJECTS {
                            self.plus_asked.pop_front();
                        }
                        self.plus_asked.push_back((seq, m.session_id));
                    }
                }
            }
            (Dir::ToClient, PlusOpcode::RESPONSE | PlusOpcode::RESPONSE2) => {
                let Some(i) = self.plus_asked.iter().position(|(s, _)| *s == seq) else {
                    return;
                };
                let named = self.plus_asked.remove(i).and_then(|(_, n)| n);
                let success = m.payload.first() == Some(&0);
                self.plus_candidate = match (named, self.plus_candidate) {
                    (Some(id), Some((c, n))) if success && id == c => {
                        Some((id, n.saturating_add(1)))
                    }
                    (Some(id), _) if success => Some((id, 1)),
                    _ => None,
                };
                if let Some((id, n)) = self.plus_candidate {
                    if n >= PIN_ANSWERS {
                        self.plus_session = Some(id);
                        self.plus_asked.clear();
                    }
                }
            }
            _ => {}
        }
    }

    /// A GetMultiVariables request of PLC variables (from the client): its items kept for the
    /// values of its response (from the PLC). A sequence number asked again before its answer
    /// came forgets its requests, and no later request of it is held: which one an answer is
    /// for is not known.
    fn remember_read(&mut self, ctx: &mut Ctx<'_>, m: &s7::S7PlusMessage<'_>, ev: &S7PlusEvent) {
        let (Some(seq), Some(PlusFunction::GET_MULTI_VARIABLES)) = (m.sequence, m.function) else {
            return;
        };
        if self.plus_reused.contains(&seq) {
            return;
        }
        if self.plus_reads.take(seq).is_some() {
            if self.plus_reused.len() == MAX_OUTSTANDING {
                self.plus_reused.pop_front();
            }
            self.plus_reused.push_back(seq);
            return;
        }
        if ev.items.is_empty() {
            return;
        }
        if plus_weight(&ev.items) > MAX_JOB_ITEMS {
            ctx.stats[S7COMMPLUS].outstanding_bound_drops += 1;
            return;
        }
        let dropped = self.plus_reads.remember((seq, ev.items.clone()));
        ctx.stats[S7COMMPLUS].outstanding_bound_drops += dropped;
    }

    /// A GetMultiVariables response: its request's items, with the values it carries.
    fn plus_read_values(&mut self, m: &s7::S7PlusMessage<'_>, ev: &mut S7PlusEvent) {
        let Some((_, mut items)) = m.sequence.and_then(|seq| self.plus_reads.take(seq)) else {
            return;
        };
        if let Some(values) = s7::get_multi_values(m.payload) {
            set_values(&mut items, values);
        }
        ev.items = items;
    }

    /// What a request addresses, into its event.
    fn plus_target(&mut self, m: &s7::S7PlusMessage<'_>, ev: &mut S7PlusEvent) {
        let Some(target) = m.function.and_then(|f| s7::request_target(f, m.payload)) else {
            return;
        };
        ev.nothing_created = self.plus_created == 0;
        // The session is what the request names as its own too.
        let own = |id: u32| {
            if self.plus_session == Some(id) && m.session_id == Some(id) {
                Some("session")
            } else if self.plus_objects.contains(&id) {
                Some("created")
            } else {
                None
            }
        };
        match target {
            Err(e) => ev.error = Some(e.kind.as_str()),
            Ok(s7::PlusTarget::Object { id, attributes }) => {
                (ev.object_id, ev.own_object) = (Some(id), own(id));
                for a in attributes {
                    match a {
                        Ok(a) => ev.attributes.push(a),
                        Err(e) => ev.error = Some(e.kind.as_str()),
                    }
                }
            }
            Ok(s7::PlusTarget::Items(items)) => {
                for item in items {
                    let item = match item {
                        Ok(item) => item,
                        Err(e) => {
                            ev.error = Some(e.kind.as_str());
                            break;
                        }
                    };
                    let area = s7::PlusArea::of(item.access_area);
                    let mut lids = Vec::with_capacity(item.lid_count as usize + 1);
                    lids.push(item.sub_area);
                    lids.extend(item.lids());
                    ev.items.push(S7PlusItem {
                        area: match area {
                            Some(s7::PlusArea::Db(_)) => "DB",
                            Some(s7::PlusArea::Inputs) => "I",
                            Some(s7::PlusArea::Outputs) => "Q",
                            Some(s7::PlusArea::Flags) => "M",
                            Some(s7::PlusArea::Counters) => "C",
                            Some(s7::PlusArea::Timers) => "T",
                            None => "object",
                        },
                        db: match area {
                            Some(s7::PlusArea::Db(n)) => Some(n),
                            _ => None,
                        },
                        access_area: item.access_area,
                        symbol_crc: item.symbol_crc,
                        lids,
                        own_object: if area.is_none() {
                            own(item.access_area)
                        } else {
                            None
                        },
                        value: None,
                    });
                }
            }
        }
        // The CPU's operating state request: only a request of object 52, one naming an item
        // of access area 52, or one whose addressing did not decode can hold it (an ordinary
        // variable write is not walked again).
        let cpu = s7::CPU_EXEC_UNIT;
        let may_name = m.payload.get(..4) == Some(&cpu.to_be_bytes()[..])
            || ev.error.is_some()
            || ev.items.iter().any(|i| i.access_area == cpu);
        if let Some(state) = m
            .function
            .filter(|_| may_name)
            .and_then(|f| s7::requested_cpu_state(f, m.payload))
        {
            (ev.cpu_state_request, ev.requested_state) = (true, state);
        }
    }
}
