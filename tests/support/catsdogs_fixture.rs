//! Small parquet files in the layout of the Hub's `microsoft/cats_vs_dogs` dataset.
//!
//! Schema (as the Hub's `datasets` writes it, every field nullable):
//! `image: struct<bytes: binary, path: string>`, `labels: int64` (0 = cat, 1 = dog), and the
//! `huggingface` key ([`HF_METADATA_JSON`]) both in the file's key-value metadata (where
//! pyarrow puts it) and in the Arrow schema metadata. Rows are sorted by label like the real
//! file: the first `(rows + 1) / 2` are cats, the rest dogs ([`catsdogs_label`]).
//!
//! Images are JPEGs of varied sizes (40..=64 × 32..=48 px) whose content makes the class
//! learnable: cats are reddish and bright on the left, dogs bluish and bright on the right,
//! both with per-pixel noise. `image.path` is null in every row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// The `huggingface` metadata value of the real dataset's parquet files.
pub const HF_METADATA_JSON: &str = r#"{"info": {"features": {"image": {"_type": "Image"}, "labels": {"names": ["cat", "dog"], "_type": "ClassLabel"}}}}"#;

/// Rows per row group in the generated files (so larger fixtures have several).
pub const ROW_GROUP_ROWS: usize = 64;

/// The label of `row` in a file of `rows` rows: cats first, then dogs.
pub fn catsdogs_label(row: usize, rows: usize) -> i64 {
    if row < rows.div_ceil(2) { 0 } else { 1 }
}

/// The Arrow schema of the generated files (with the `huggingface` metadata).
pub fn catsdogs_schema() -> Schema {
    let image_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    Schema::new_with_metadata(
        vec![
            Field::new("image", DataType::Struct(image_fields), true),
            Field::new("labels", DataType::Int64, true),
        ],
        HashMap::from([("huggingface".to_owned(), HF_METADATA_JSON.to_owned())]),
    )
}

/// A snappy-compressed parquet file of `rows` rows (see the module docs). Rows listed in
/// `corrupt_rows` hold a truncated JPEG that no decoder accepts; rows in `grayscale_rows`
/// hold a single-channel (L8) JPEG. The output is a pure function of the arguments.
pub fn catsdogs_parquet(
    rows: usize,
    seed: u64,
    corrupt_rows: &[usize],
    grayscale_rows: &[usize],
) -> Vec<u8> {
    let images: Vec<Vec<u8>> = (0..rows)
        .map(|row| {
            let image_seed = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(row as u64);
            let jpeg = catsdogs_jpeg(
                catsdogs_label(row, rows),
                image_seed,
                grayscale_rows.contains(&row),
            );
            if corrupt_rows.contains(&row) {
                truncated(jpeg)
            } else {
                jpeg
            }
        })
        .collect();
    let labels: Vec<i64> = (0..rows).map(|row| catsdogs_label(row, rows)).collect();

    let schema = Arc::new(catsdogs_schema());
    let DataType::Struct(image_fields) = schema.field(0).data_type().clone() else {
        unreachable!("image is a struct column");
    };
    let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values(images.iter()));
    let paths: ArrayRef = Arc::new(StringArray::new_null(rows));
    let image_column = StructArray::try_new(image_fields, vec![bytes, paths], None)
        .expect("build the image struct column");
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(image_column) as ArrayRef,
            Arc::new(Int64Array::from(labels)),
        ],
    )
    .expect("build the record batch");

    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "huggingface".to_owned(),
            HF_METADATA_JSON.to_owned(),
        )]))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).expect("parquet writer");
    writer.write(&batch).expect("write the batch");
    writer.close().expect("finish the parquet file");
    out
}

/// One generated JPEG for `label` (0 = cat, 1 = dog); deterministic in `seed`.
pub fn catsdogs_jpeg(label: i64, seed: u64, grayscale: bool) -> Vec<u8> {
    let mut rng = SplitMix64(seed ^ 0x5EED_CA75_D065);
    let width = 40 + (rng.next() % 25) as u32; // 40..=64
    let height = 32 + (rng.next() % 17) as u32; // 32..=48
    let is_dog = label != 0;
    // Cats: reddish; dogs: bluish. A per-image jitter keeps the classes overlapping a little.
    let base: [f32; 3] = if is_dog {
        [70.0, 105.0, 185.0]
    } else {
        [185.0, 100.0, 65.0]
    };
    let jitter: Vec<f32> = (0..3).map(|_| rng.signed(35.0)).collect();

    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for _y in 0..height {
        for x in 0..width {
            let t = x as f32 / (width - 1) as f32;
            // Cats are bright on the left, dogs on the right.
            let light = if is_dog { t } else { 1.0 - t };
            let gain = 0.45 + 0.75 * light;
            for c in 0..3 {
                let v = (base[c] + jitter[c]) * gain + rng.signed(30.0);
                rgb.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }

    let mut out = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut out, 90);
    if grayscale {
        let luma: Vec<u8> = rgb
            .chunks_exact(3)
            .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) as u8)
            .collect();
        encoder
            .encode(&luma, width, height, ExtendedColorType::L8)
            .expect("encode a grayscale jpeg");
    } else {
        encoder
            .encode(&rgb, width, height, ExtendedColorType::Rgb8)
            .expect("encode an rgb jpeg");
    }
    out
}

/// The first bytes of a JPEG: the SOI marker and part of the headers, cut before any frame
/// header, so decoders fail (but format sniffing still says "JPEG").
fn truncated(jpeg: Vec<u8>) -> Vec<u8> {
    jpeg[..jpeg.len().min(40)].to_vec()
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-amplitude, amplitude).
    fn signed(&mut self, amplitude: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * amplitude
    }
}
