//! One TensorBoard event file: a TFRecord stream (length, masked CRC-32C of the length, the
//! record, masked CRC-32C of the record) of `Event` messages, the first carrying the file
//! version, the others one scalar each (`Summary.Value.simple_value`, which TensorBoard's
//! scalars plugin reads as Keras' own logs).
//!
//! An event file is an append-only log, like TensorFlow's: records are flushed as each epoch
//! ends so TensorBoard shows a run while it trains, and a process killed mid-write leaves at
//! most one truncated last record, which TensorBoard's reader skips.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What TensorBoard expects in the first record.
pub const FILE_VERSION: &str = "brain.Event:2";

pub struct EventFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl EventFile {
    /// A new event file in `dir` (created if needed), named as TensorFlow names them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.<n>`; TensorBoard finds files by
    /// `tfevents`), starting with the file-version record.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        std::fs::create_dir_all(dir)?;
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "events.out.tfevents.{seconds}.{}.{}.{}.v2",
            host_name(),
            std::process::id(),
            OPENED.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path)?;
        let mut event_file = Self {
            path,
            writer: BufWriter::new(file),
        };
        let mut event = Vec::new();
        put_header(&mut event, 0);
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        event_file.write_record(&event)?;
        Ok(event_file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `value` under `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> std::io::Result<()> {
        let mut summary_value = Vec::with_capacity(tag.len() + 8);
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_key(&mut summary_value, 2, WIRE_FIXED32);
        summary_value.extend_from_slice(&value.to_le_bytes());
        let mut summary = Vec::with_capacity(summary_value.len() + 2);
        put_bytes(&mut summary, 1, &summary_value);
        let mut event = Vec::with_capacity(summary.len() + 24);
        put_header(&mut event, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Makes what was logged so far visible to TensorBoard.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    fn write_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        let length = (record.len() as u64).to_le_bytes();
        self.writer.write_all(&length)?;
        self.writer.write_all(&masked_crc(&length).to_le_bytes())?;
        self.writer.write_all(record)?;
        self.writer.write_all(&masked_crc(record).to_le_bytes())
    }
}

impl Drop for EventFile {
    fn drop(&mut self) {
        let _ = self.writer.flush();
    }
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs is
/// not degenerate.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LENGTH: u8 = 2;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// `Event.wall_time` (field 1, seconds since the epoch) and `Event.step` (field 2).
fn put_header(event: &mut Vec<u8>, step: i64) {
    let wall_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    put_key(event, 1, WIRE_FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        put_key(event, 2, WIRE_VARINT);
        put_varint(event, step as u64);
    }
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LENGTH);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    // The name is part of a file name: keep it to characters every file system takes.
    let clean: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::read::{Scalar, read_events};

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c_test: the CRC-32C of "123456789" is 0xe3069283; masked
        // (rotated right by 15, plus 0xa282ead8) it is 0xc78ab0e5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn scalars_read_back_with_their_steps_and_tags() {
        let dir = std::env::temp_dir().join(format!("kiln-tb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut file = EventFile::create(&dir).unwrap();
        file.scalar("batch_loss", 0, 2.5).unwrap();
        file.scalar("batch_loss", 300, 0.125).unwrap();
        file.scalar("epoch_accuracy", 1, 0.875).unwrap();
        file.flush().unwrap();
        let path = file.path().to_owned();
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("events.out.tfevents.")
        );
        let events = read_events(&path).unwrap();
        assert_eq!(events.file_version.as_deref(), Some(FILE_VERSION));
        let scalars: Vec<(String, i64, f32)> = events
            .scalars
            .iter()
            .map(
                |Scalar {
                     tag, step, value, ..
                 }| (tag.clone(), *step, *value),
            )
            .collect();
        assert_eq!(
            scalars,
            [
                ("batch_loss".into(), 0, 2.5),
                ("batch_loss".into(), 300, 0.125),
                ("epoch_accuracy".into(), 1, 0.875)
            ]
        );
        assert!(events.scalars.iter().all(|s| s.wall_time > 1.6e9));

        // A flipped byte fails the record's checksum; a cut-off last record is skipped, as
        // TensorBoard skips one.
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - 3;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert_eq!(read_events(&path).unwrap().scalars.len(), 2);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = read_events(&path).unwrap_err().to_string();
        assert!(error.contains("checksum"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
