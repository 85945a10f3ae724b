//! Reads event files back: each TFRecord's checksums checked, each `Event`'s step, wall time
//! and scalar values decoded (unknown fields skipped, as protobuf readers do).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use super::event_file::{WIRE_FIXED32, WIRE_FIXED64, WIRE_LENGTH, WIRE_VARINT, masked_crc};

/// One logged scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub wall_time: f64,
    pub value: f32,
}

/// What an event file holds.
#[derive(Debug, Default)]
pub struct Events {
    pub file_version: Option<String>,
    pub scalars: Vec<Scalar>,
}

/// Reads `path`. A checksum that does not match is an error; a cut-off last record (a
/// writer killed mid-record) ends the file, as in TensorBoard.
pub fn read_events(path: &Path) -> Result<Events> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Events::default();
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let length_bytes = &bytes[at..at + 8];
        let length_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into()?);
        ensure!(
            masked_crc(length_bytes) == length_crc,
            "{}: the length checksum of the record at byte {at} does not match: the file is corrupt",
            path.display()
        );
        let length = usize::try_from(u64::from_le_bytes(length_bytes.try_into()?))?;
        let start = at + 12;
        let Some(end) = start.checked_add(length).filter(|&e| e + 4 <= bytes.len()) else {
            break;
        };
        let record = &bytes[start..end];
        let record_crc = u32::from_le_bytes(bytes[end..end + 4].try_into()?);
        ensure!(
            masked_crc(record) == record_crc,
            "{}: the data checksum of the record at byte {at} does not match: the file is corrupt",
            path.display()
        );
        decode_event(record, &mut events)
            .with_context(|| format!("{}: the record at byte {at}", path.display()))?;
        at = end + 4;
    }
    Ok(events)
}

fn decode_event(record: &[u8], events: &mut Events) -> Result<()> {
    let (mut step, mut wall_time) = (0i64, 0f64);
    let mut values = Vec::new();
    for field in Fields(record) {
        match field? {
            (1, Value::Fixed64(bits)) => wall_time = f64::from_bits(bits),
            (2, Value::Varint(v)) => step = v as i64,
            (3, Value::Bytes(version)) => {
                events.file_version = Some(String::from_utf8_lossy(version).into_owned());
            }
            (5, Value::Bytes(summary)) => {
                for value in Fields(summary) {
                    if let (1, Value::Bytes(value)) = value? {
                        values.push(decode_value(value)?);
                    }
                }
            }
            _ => {}
        }
    }
    events
        .scalars
        .extend(values.into_iter().flatten().map(|(tag, value)| Scalar {
            tag,
            step,
            wall_time,
            value,
        }));
    Ok(())
}

/// A `Summary.Value`'s tag and `simple_value` (None for other kinds of value).
fn decode_value(value: &[u8]) -> Result<Option<(String, f32)>> {
    let (mut tag, mut simple) = (String::new(), None);
    for field in Fields(value) {
        match field? {
            (1, Value::Bytes(bytes)) => tag = String::from_utf8_lossy(bytes).into_owned(),
            (2, Value::Fixed32(bits)) => simple = Some(f32::from_bits(bits)),
            _ => {}
        }
    }
    Ok(simple.map(|v| (tag, v)))
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// The (field number, value) pairs of one protobuf message.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.0)?;
            let number = u32::try_from(key >> 3)?;
            let value = match (key & 7) as u8 {
                WIRE_VARINT => Value::Varint(varint(&mut self.0)?),
                WIRE_FIXED64 => {
                    Value::Fixed64(u64::from_le_bytes(take(&mut self.0, 8)?.try_into()?))
                }
                WIRE_FIXED32 => {
                    Value::Fixed32(u32::from_le_bytes(take(&mut self.0, 4)?.try_into()?))
                }
                WIRE_LENGTH => {
                    let length = usize::try_from(varint(&mut self.0)?)?;
                    Value::Bytes(take(&mut self.0, length)?)
                }
                other => bail!("unsupported protobuf wire type {other}"),
            };
            Ok((number, value))
        })();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    ensure!(bytes.len() >= n, "a protobuf field runs past its message");
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn varint(bytes: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let [byte, rest @ ..] = *bytes else {
            bail!("a protobuf varint runs past its message");
        };
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("a protobuf varint is longer than 10 bytes")
}
