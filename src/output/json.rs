//! JSON lines written as serde_json writes them, byte for byte, with strings escaped eight
//! bytes at a time.
//!
//! serde_json looks every byte of every string up in a table and writes each run between
//! escapes through its writer: on the events output (steady-site, one line per PDU) that was a
//! 39% of the run's instructions (3.09 G of 7.96 G), keys included. This serializer finds the bytes to escape
//! a word at a time (a quote, a backslash or a control character: what serde_json escapes, and
//! as it escapes them) and copies the runs between them into the line; a string shorter than
//! 16 bytes (most keys, names and addresses) goes in as whole words cut back to its length,
//! with no `memcpy` call. Numbers are written by serde_json's own [`CompactFormatter`], so they
//! are the same bytes. The tests hold it to `serde_json::to_writer` on random values and on
//! every event of the corpus and of fixtures/ (`tests/corpus.rs`,
//! `every_event_is_serde_jsons_bytes`). benches/README.md (session 32) has what it gained.

use std::fmt::{self, Display};

use serde::ser::{self, Serialize};
use serde_json::ser::{CompactFormatter, Formatter};

/// Why a value could not be written: a map key that is not a string, a number, a boolean or
/// a character (as serde_json refuses them), or a `Serialize` impl's own error.
#[derive(Debug)]
pub struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Error {
        Error(msg.to_string())
    }
}

fn key_must_be_a_string() -> Error {
    Error("key must be a string".to_string())
}

/// A float key must be finite (serde_json's rule).
fn finite_key(finite: bool) -> Result<()> {
    if finite {
        Ok(())
    } else {
        Err(Error("float key must be finite".to_string()))
    }
}

type Result<T> = std::result::Result<T, Error>;

/// `value` as JSON at the end of `out`: the bytes `serde_json::to_writer` writes. On an
/// error, what was written of the value stays (as with serde_json's writer).
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    value.serialize(&mut Json { out })
}

/// A byte of every lane of a word.
const LANES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A mark at the high bit of the first byte of `w` (little-endian: the lowest lane) that JSON
/// escapes, if any: below 0x20, `"` or `\`. The lowest mark is exact; marks above it may not
/// be (a borrow from a lane that matched), so only the lowest is used.
#[inline(always)]
fn escapes_in(w: u64) -> u64 {
    let control = w.wrapping_sub(LANES * 0x20) & !w;
    let quote =
        (w ^ (LANES * u64::from(b'"'))).wrapping_sub(LANES) & !(w ^ (LANES * u64::from(b'"')));
    let backslash =
        (w ^ (LANES * u64::from(b'\\'))).wrapping_sub(LANES) & !(w ^ (LANES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH
}

/// The escape of `byte` (one JSON escapes), as serde_json writes it.
#[cold]
fn push_escape(out: &mut Vec<u8>, byte: u8) {
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// The bytes of `tail` (at most 7) as the low lanes of a word whose other lanes are a byte
/// JSON does not escape, read in a 4-, a 2- and a 1-byte piece.
#[inline(always)]
fn padded(tail: &[u8]) -> u64 {
    let mut w = LANES * u64::from(b'a');
    let (mut rest, mut shift) = (tail, 0);
    if let Some((piece, after)) = rest.split_first_chunk::<4>() {
        w = w & !0xffff_ffff | u64::from(u32::from_le_bytes(*piece));
        (rest, shift) = (after, 32);
    }
    if let Some((piece, after)) = rest.split_first_chunk::<2>() {
        w = w & !(0xffff << shift) | u64::from(u16::from_le_bytes(*piece)) << shift;
        (rest, shift) = (after, shift + 16);
    }
    if let Some(&last) = rest.first() {
        w = w & !(0xff << shift) | u64::from(last) << shift;
    }
    w
}

/// Where the first byte of `bytes` that JSON escapes is, a word at a time.
#[inline(always)]
fn first_escape(bytes: &[u8]) -> Option<usize> {
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, w) in words.iter().enumerate() {
        let marks = escapes_in(u64::from_le_bytes(*w));
        if marks != 0 {
            return Some(i * 8 + (marks.trailing_zeros() / 8) as usize);
        }
    }
    // The padding lanes never mark, so a mark is in the tail.
    let marks = escapes_in(padded(tail));
    (marks != 0).then(|| words.len() * 8 + (marks.trailing_zeros() / 8) as usize)
}

/// `s` as a JSON string, quoted and escaped as serde_json writes it.
#[inline]
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.len() < 16 {
        // Most strings (keys, names, addresses): quoted in a buffer of two words and
        // written in one copy.
        let (words, tail) = bytes.as_chunks::<8>();
        let (lo, hi) = match words.first() {
            Some(w) => (u64::from_le_bytes(*w), padded(tail)),
            None => (padded(tail), padded(&[])),
        };
        if escapes_in(lo) | escapes_in(hi) == 0 {
            // Whole words from registers, then cut back to the string's end: no copy of a
            // length known only at run time (a call to `memcpy`, which read the words just
            // stored before they could be forwarded).
            let end = out.len() + 1 + bytes.len();
            out.reserve(18);
            out.push(b'"');
            out.extend_from_slice(&lo.to_le_bytes());
            if bytes.len() >= 8 {
                out.extend_from_slice(&hi.to_le_bytes());
            }
            out.truncate(end);
            out.push(b'"');
            return;
        }
    }
    out.push(b'"');
    push_contents(out, bytes);
    out.push(b'"');
}

/// A string's bytes, escaped, without its quotes.
fn push_contents(out: &mut Vec<u8>, bytes: &[u8]) {
    match first_escape(bytes) {
        None => out.extend_from_slice(bytes),
        Some(at) => push_escaped(out, bytes, at),
    }
}

/// `bytes`, whose first byte to escape is at `at`, escaped.
#[cold]
#[inline(never)]
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], mut at: usize) {
    let mut run = 0;
    loop {
        out.extend_from_slice(&bytes[run..at]);
        push_escape(out, bytes[at]);
        run = at + 1;
        match first_escape(&bytes[run..]) {
            Some(next) => at = run + next,
            None => break,
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

/// serde_json's formatter, for the numbers and the literals (writing to a `Vec` cannot fail).
fn formatted(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut CompactFormatter, &mut Vec<u8>) -> std::io::Result<()>,
) {
    let _ = write(&mut CompactFormatter, out);
}

/// A float as serde_json writes it: `null` when it is NaN or infinite.
fn finite_or_null(
    out: &mut Vec<u8>,
    finite: bool,
    write: impl FnOnce(&mut CompactFormatter, &mut Vec<u8>) -> std::io::Result<()>,
) {
    if finite {
        formatted(out, write);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A number or a boolean as a map key: quoted.
fn quoted(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut CompactFormatter, &mut Vec<u8>) -> std::io::Result<()>,
) {
    out.push(b'"');
    formatted(out, write);
    out.push(b'"');
}

struct Json<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Json<'a> {
    /// A sequence (`[`) or an object (`{`) started, its first member to come.
    fn open<'s>(&'s mut self, opener: u8) -> Compound<'s, 'a> {
        self.out.push(opener);
        Compound {
            ser: self,
            first: true,
        }
    }

    /// An enum's variant with data is an object of one member, the variant: its start.
    fn open_variant(&mut self, variant: &str) {
        self.out.push(b'{');
        push_str(self.out, variant);
        self.out.push(b':');
    }
}

/// A sequence or an object being written: whether the next member is its first.
struct Compound<'s, 'a> {
    ser: &'s mut Json<'a>,
    first: bool,
}

impl Compound<'_, '_> {
    fn separate(&mut self) {
        if !self.first {
            self.ser.out.push(b',');
        }
        self.first = false;
    }
}

macro_rules! numbers {
    ($($method:ident $t:ty => $write:ident),* $(,)?) => {
        $(fn $method(self, v: $t) -> Result<()> {
            formatted(self.out, |f, out| f.$write(out, v));
            Ok(())
        })*
    };
}

impl<'s, 'a> ser::Serializer for &'s mut Json<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    numbers! {
        serialize_i8 i8 => write_i8,
        serialize_i16 i16 => write_i16,
        serialize_i32 i32 => write_i32,
        serialize_i64 i64 => write_i64,
        serialize_i128 i128 => write_i128,
        serialize_u8 u8 => write_u8,
        serialize_u16 u16 => write_u16,
        serialize_u32 u32 => write_u32,
        serialize_u64 u64 => write_u64,
        serialize_u128 u128 => write_u128,
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<()> {
        finite_or_null(self.out, v.is_finite(), |f, out| f.write_f32(out, v));
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<()> {
        finite_or_null(self.out, v.is_finite(), |f, out| f.write_f64(out, v));
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        push_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<()> {
        push_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        formatted(self.out, |f, out| f.write_byte_array(out, v));
        Ok(())
    }

    /// Text written straight into the line, escaped piece by piece as it comes (as serde_json
    /// does): no `String` for it.
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<()> {
        struct Escaping<'b>(&'b mut Vec<u8>);
        impl fmt::Write for Escaping<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                push_contents(self.0, s.as_bytes());
                Ok(())
            }
        }
        self.out.push(b'"');
        fmt::write(&mut Escaping(self.out), format_args!("{value}"))
            .map_err(|_| Error("a value's Display failed".to_string()))?;
        self.out.push(b'"');
        Ok(())
    }

    fn serialize_none(self) -> Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<()> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'s, 'a>> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'a>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'s, 'a>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>> {
        self.open_variant(variant);
        self.serialize_seq(Some(len))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'s, 'a>> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'s, 'a>> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>> {
        self.open_variant(variant);
        self.serialize_map(Some(len))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.separate();
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<()> {
        self.ser.out.push(b']');
        Ok(())
    }
}

/// Tuples and tuple structs are sequences.
macro_rules! as_sequence {
    ($($trait:ident $method:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                ser::SerializeSeq::serialize_element(self, value)
            }

            fn end(self) -> Result<()> {
                ser::SerializeSeq::end(self)
            }
        })*
    };
}

as_sequence!(SerializeTuple serialize_element, SerializeTupleStruct serialize_field);

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<()> {
        self.ser.out.extend_from_slice(b"]}");
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.separate();
        key.serialize(Key(&mut *self.ser))?;
        self.ser.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<()> {
        self.ser.out.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.separate();
        push_str(self.ser.out, key);
        self.ser.out.push(b':');
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<()> {
        ser::SerializeMap::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<()> {
        self.ser.out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// A map's key, as serde_json takes them: a string; a number or a boolean, quoted (a float
/// only when finite); a character; a unit variant's name; through newtypes and `Some`.
struct Key<'s, 'a>(&'s mut Json<'a>);

macro_rules! quoted_keys {
    ($($method:ident $t:ty => $write:ident),* $(,)?) => {
        $(fn $method(self, v: $t) -> Result<()> {
            quoted(self.0.out, |f, out| f.$write(out, v));
            Ok(())
        })*
    };
}

impl ser::Serializer for Key<'_, '_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    quoted_keys! {
        serialize_bool bool => write_bool,
        serialize_i8 i8 => write_i8,
        serialize_i16 i16 => write_i16,
        serialize_i32 i32 => write_i32,
        serialize_i64 i64 => write_i64,
        serialize_i128 i128 => write_i128,
        serialize_u8 u8 => write_u8,
        serialize_u16 u16 => write_u16,
        serialize_u32 u32 => write_u32,
        serialize_u64 u64 => write_u64,
        serialize_u128 u128 => write_u128,
    }

    fn serialize_f32(self, v: f32) -> Result<()> {
        finite_key(v.is_finite())?;
        quoted(self.0.out, |f, out| f.write_f32(out, v));
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<()> {
        finite_key(v.is_finite())?;
        quoted(self.0.out, |f, out| f.write_f64(out, v));
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        push_str(self.0.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<()> {
        push_str(self.0.out, v);
        Ok(())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<()> {
        push_str(self.0.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn ours<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        to_writer(&mut out, v).expect("written");
        out
    }

    fn theirs<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("written")
    }

    /// A small generator (xorshift), so that a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Strings of every kind of character JSON treats apart: controls, quotes,
        /// backslashes, DEL, multi-byte characters, in runs of every length around the
        /// eight-byte word.
        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a", "Z", "0", " ", "\"", "\\", "/", "\u{7f}", "é", "€", "𝄞", "\u{0}", "\u{1}",
                "\u{8}", "\t", "\n", "\u{b}", "\u{c}", "\r", "\u{1f}", "!", "#", "]", "}",
            ];
            let len = self.below(40);
            (0..len)
                .map(|_| {
                    if self.below(3) == 0 {
                        PIECES[self.below(PIECES.len() as u64) as usize].to_string()
                    } else {
                        char::from(b'a' + self.below(26) as u8).to_string()
                    }
                })
                .collect()
        }

        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth == 0 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => match self.below(4) {
                    0 => json!(self.next()),
                    1 => json!(self.next() as i64),
                    2 => json!(f64::from_bits(self.next())),
                    _ => json!(self.below(1000) as f64 / 8.0 - 50.0),
                },
                3..=5 => Value::String(self.string()),
                6 => Value::Array((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.below(5) {
                        let k = self.string();
                        let v = self.value(depth - 1);
                        m.insert(k, v);
                    }
                    Value::Object(m)
                }
            }
        }
    }

    #[test]
    fn random_values_are_serde_jsons_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let v = rng.value(4);
            assert_eq!(
                String::from_utf8_lossy(&ours(&v)),
                String::from_utf8_lossy(&theirs(&v)),
                "{v:?}"
            );
        }
    }

    #[test]
    fn every_byte_below_0x80_is_escaped_as_serde_json_escapes_it() {
        // Each ASCII byte, and characters whose UTF-8 bytes are 0x80 and above (U+00A0: C2 A0;
        // U+00BF; U+07FF; U+FFFF; U+10FFFF), at every place of strings of every length
        // around the words and the short strings' fast path (0 to 24 bytes).
        let others = ['\u{a0}', '\u{bf}', '\u{7ff}', '\u{ffff}', '\u{10ffff}'];
        for c in (0u8..0x80).map(char::from).chain(others) {
            for len in 1..=24 {
                for at in 0..len {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    assert_eq!(ours(&s), theirs(&s), "{c:?} at {at} of {len}");
                }
            }
        }
        assert_eq!(ours(""), theirs(""));
    }

    #[derive(serde::Serialize)]
    enum E {
        Unit,
        New(u8),
        Tuple(u8, &'static str),
        Struct { a: Option<u8>, b: f32 },
    }

    #[derive(serde::Serialize)]
    struct S<'a> {
        e: Vec<E>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(flatten)]
        flat: std::collections::BTreeMap<&'a str, i128>,
        ints: std::collections::BTreeMap<i64, bool>,
        bools: std::collections::BTreeMap<bool, char>,
        chars: std::collections::BTreeMap<char, ()>,
        floats: Vec<f32>,
        tuple: (u128, i8, char),
        unit: (),
        empty: Vec<u8>,
        nested: Option<Option<u16>>,
    }

    #[test]
    fn typed_values_are_serde_jsons_bytes() {
        let s = S {
            e: vec![
                E::Unit,
                E::New(7),
                E::Tuple(1, "t\"w\\o"),
                E::Struct { a: None, b: 1.5 },
            ],
            skipped: None,
            flat: [("x", i128::MIN), ("y\n", 3)].into_iter().collect(),
            ints: [(-1, true), (i64::MAX, false)].into_iter().collect(),
            bools: [(true, 'a'), (false, '\u{1}')].into_iter().collect(),
            chars: [('"', ()), ('é', ())].into_iter().collect(),
            floats: vec![0.1, f32::NAN, f32::INFINITY, -0.0, 1e30, f32::MIN_POSITIVE],
            tuple: (u128::MAX, -128, '\u{7f}'),
            unit: (),
            empty: vec![],
            nested: Some(None),
        };
        assert_eq!(
            String::from_utf8_lossy(&ours(&s)),
            String::from_utf8_lossy(&theirs(&s))
        );
        let floats = [
            0.0,
            -0.0,
            1e-300,
            1e300,
            f64::NAN,
            f64::NEG_INFINITY,
            123.456,
        ];
        assert_eq!(ours(&floats), theirs(&floats));
        let bytes = serde_bytes_like(&[0, 1, 255]);
        assert_eq!(ours(&bytes), theirs(&bytes));
    }

    /// A value serialized with `serialize_bytes`.
    struct Bytes<'a>(&'a [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    fn serde_bytes_like(b: &[u8]) -> Bytes<'_> {
        Bytes(b)
    }

    #[test]
    fn keys_serde_json_refuses_are_refused() {
        use std::collections::BTreeMap;
        let refused = |ours: Result<()>, theirs: serde_json::Result<Vec<u8>>| {
            assert!(ours.is_err() && theirs.is_err());
        };
        let m: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
        refused(to_writer(&mut Vec::new(), &m), serde_json::to_vec(&m));
        let m: BTreeMap<Option<u8>, u8> = [(None, 1)].into_iter().collect();
        refused(to_writer(&mut Vec::new(), &m), serde_json::to_vec(&m));
        for k in [f64::NAN, f64::INFINITY] {
            let m: Vec<(f64, u8)> = vec![(k, 1)];
            let m = Pairs(&m);
            refused(to_writer(&mut Vec::new(), &m), serde_json::to_vec(&m));
        }
    }

    /// A map of any key type, in the order given.
    struct Pairs<'a, K, V>(&'a [(K, V)]);
    impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    #[derive(serde::Serialize)]
    struct Newtype(i16);

    /// Text through `collect_str`, in several pieces, escapes among them.
    struct Shown;
    impl Serialize for Shown {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("a\"{}\n{}\u{1}", "é\\", 42))
        }
    }

    #[test]
    fn keys_and_text_serde_json_takes_are_its_bytes() {
        let keys: Vec<u8> = [
            ours(&Pairs(&[(Some('k'), 1), (None::<char>, 2)][..1])),
            ours(&Pairs(&[(Newtype(-3), 1)])),
            ours(&Pairs(&[(E::Unit, 1)])),
            ours(&Pairs(&[(1.5f64, 1), (-0.0, 2)])),
            ours(&Pairs(&[(2.5f32, true)])),
            ours(&Pairs(&[(u128::MAX, ()), (0, ())])),
            ours(&Shown),
        ]
        .concat();
        let theirs: Vec<u8> = [
            theirs(&Pairs(&[(Some('k'), 1), (None::<char>, 2)][..1])),
            theirs(&Pairs(&[(Newtype(-3), 1)])),
            theirs(&Pairs(&[(E::Unit, 1)])),
            theirs(&Pairs(&[(1.5f64, 1), (-0.0, 2)])),
            theirs(&Pairs(&[(2.5f32, true)])),
            theirs(&Pairs(&[(u128::MAX, ()), (0, ())])),
            theirs(&Shown),
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&keys),
            String::from_utf8_lossy(&theirs)
        );
    }
}
