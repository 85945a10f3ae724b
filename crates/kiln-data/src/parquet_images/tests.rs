//! End-to-end tests of the parquet reader on small files written here.

use super::*;
use crate::decode::tests::{gray_png, rgb_png};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, LargeBinaryArray, StringArray, StructArray,
    UInt8Array,
};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kiln-data-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const META_3: &str = r#"{"info": {"features": {"image": {"_type": "Image"},
    "label": {"names": ["cat", "dog", "bird"], "_type": "ClassLabel"}}}}"#;

/// A Hugging Face Image column: `struct<bytes: binary, path: string>`; `None` is a null row.
fn hf_images(rows: &[Option<Vec<u8>>], large: bool) -> ArrayRef {
    let bytes: ArrayRef = if large {
        Arc::new(LargeBinaryArray::from_iter(
            rows.iter().map(|r| r.as_deref()),
        ))
    } else {
        Arc::new(BinaryArray::from_iter(rows.iter().map(|r| r.as_deref())))
    };
    let names: Vec<String> = (0..rows.len()).map(|i| format!("img{i}.png")).collect();
    let paths: ArrayRef = Arc::new(StringArray::from_iter_values(names));
    let fields = Fields::from(vec![
        Field::new("bytes", bytes.data_type().clone(), true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let nulls = rows.iter().map(Option::is_some).collect::<Vec<_>>();
    Arc::new(StructArray::try_new(fields, vec![bytes, paths], Some(nulls.into())).unwrap())
}

fn labels(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// Writes one parquet file with the given columns and optional `huggingface` metadata.
fn write(path: &Path, columns: Vec<(&str, ArrayRef)>, hf_meta: Option<&str>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(
            hf_meta.map(|m| vec![KeyValue::new(HF_METADATA_KEY.to_owned(), m.to_owned())]),
        )
        .build();
    let file = File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_hf(path: &Path, rows: &[Option<Vec<u8>>], label_values: &[i64], hf_meta: Option<&str>) {
    write(
        path,
        vec![
            ("image", hf_images(rows, false)),
            ("label", labels(label_values)),
        ],
        hf_meta,
    );
}

fn read(paths: &[PathBuf], color: ColorMode, size: Option<(usize, usize)>) -> ImageDataset {
    read_parquet_images(
        paths,
        &ColumnNames::default(),
        DecodeSpec::new(color, size, ResizeMode::Squash),
    )
    .unwrap()
}

#[test]
fn reads_hf_layout_with_class_names() {
    let dir = TempDir::new();
    let path = dir.file("train.parquet");
    let png = rgb_png(4, 5);
    write_hf(
        &path,
        &[Some(png.clone()), Some(png.clone()), Some(png)],
        &[2, 0, 1],
        Some(META_3),
    );
    let d = read(&[path], ColorMode::Rgb, None);
    assert_eq!(d.len(), 3);
    assert_eq!((d.height, d.width, d.channels), (4, 5, 3));
    assert_eq!(d.images.len(), 3 * 4 * 5 * 3);
    assert_eq!(d.labels, vec![2, 0, 1]);
    assert_eq!(d.class_names, vec!["cat", "dog", "bird"]);
    assert_eq!((d.skipped, d.warnings.len()), (0, 0));
    // Pixel (y=1, x=2) of image 1 is (2, 1, 7) / 255, in HWC order.
    assert_eq!(&d.pixels(1)[(5 + 2) * 3..(5 + 2) * 3 + 3], &[2, 1, 7]);
    let px = &d.image(1)[(5 + 2) * 3..(5 + 2) * 3 + 3];
    assert_eq!(px, &[2.0 / 255.0, 1.0 / 255.0, 7.0 / 255.0]);
}

#[test]
fn undecodable_rows_are_skipped_with_warnings() {
    let dir = TempDir::new();
    let path = dir.file("bad.parquet");
    let png = rgb_png(3, 3);
    let truncated = png[..png.len() / 2].to_vec();
    let rows = [
        Some(png.clone()),
        Some(truncated),
        Some(Vec::new()),
        None,
        Some(b"definitely not an image".to_vec()),
        Some(png),
    ];
    write_hf(&path, &rows, &[0, 1, 1, 1, 1, 1], None);
    let d = read(std::slice::from_ref(&path), ColorMode::Rgb, None);
    assert_eq!(d.len(), 2);
    assert_eq!(d.labels, vec![0, 1]);
    assert_eq!(d.skipped, 4);
    assert_eq!(d.warnings.len(), 4, "{:?}", d.warnings);
    assert!(
        d.warnings[0].contains("row 1 (img1.png)"),
        "{}",
        d.warnings[0]
    );
    assert!(d.warnings[1].contains("row 2") && d.warnings[1].contains("zero-byte"));
    assert!(d.warnings[2].contains("row 3") && d.warnings[2].contains("null"));
    assert!(d.warnings.iter().all(|w| w.contains("bad.parquet")));
}

#[test]
fn grayscale_png_read_as_rgb_and_rgb_read_as_grayscale() {
    let dir = TempDir::new();
    let path = dir.file("gray.parquet");
    write_hf(&path, &[Some(gray_png(2, 2, 51))], &[0], None);
    let d = read(std::slice::from_ref(&path), ColorMode::Rgb, None);
    assert_eq!(d.channels, 3);
    assert_eq!(d.images, vec![51; 2 * 2 * 3]);
    assert_eq!(d.image(0), vec![0.2; 2 * 2 * 3]);

    let path = dir.file("rgb.parquet");
    write_hf(&path, &[Some(rgb_png(2, 3))], &[0], None);
    let d = read(&[path], ColorMode::Grayscale, None);
    assert_eq!((d.height, d.width, d.channels), (2, 3, 1));
    assert_eq!(d.images.len(), 6);
}

#[test]
fn sizes_must_agree_unless_a_size_is_given() {
    let dir = TempDir::new();
    let path = dir.file("mixed.parquet");
    write_hf(
        &path,
        &[
            Some(rgb_png(4, 4)),
            Some(rgb_png(4, 4)),
            Some(rgb_png(6, 3)),
        ],
        &[0, 0, 0],
        None,
    );
    let err = read_parquet_images(
        std::slice::from_ref(&path),
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::ImageSizeMismatch {
                row: 2,
                expected: (4, 4),
                found: (6, 3),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("set an image size"), "{err}");

    let d = read(&[path], ColorMode::Rgb, Some((5, 7)));
    assert_eq!((d.len(), d.height, d.width), (3, 5, 7));
    assert_eq!(d.images.len(), 3 * 5 * 7 * 3);
}

#[test]
fn missing_column_lists_the_columns_that_exist() {
    let dir = TempDir::new();
    let path = dir.file("cols.parquet");
    write_hf(&path, &[Some(rgb_png(2, 2))], &[0], None);
    let columns = ColumnNames::new("image", "labels");
    let err = read_parquet_images(
        std::slice::from_ref(&path),
        &columns,
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    let DataError::MissingColumn {
        role,
        name,
        available,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*role, name.as_str()), (ColumnRole::Label, "labels"));
    assert_eq!(available, &["image", "label"]);
    let msg = err.to_string();
    assert!(msg.contains("cols.parquet") && msg.contains("image, label") && msg.contains("config"));
}

#[test]
fn wrong_column_types_say_expected_and_found() {
    let dir = TempDir::new();
    let path = dir.file("types.parquet");
    let names: ArrayRef = Arc::new(StringArray::from(vec!["cat"]));
    write(
        &path,
        vec![
            ("image", hf_images(&[Some(rgb_png(2, 2))], false)),
            ("label", names.clone()),
        ],
        None,
    );
    let err = read_parquet_images(
        std::slice::from_ref(&path),
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(&err, DataError::WrongColumnType { role: ColumnRole::Label, found, .. } if found == "Utf8"),
        "{err}"
    );
    assert!(
        err.to_string().contains("expected an integer type"),
        "{err}"
    );

    // The label column pointed at as the image.
    let columns = ColumnNames::new("label", "label");
    let err = read_parquet_images(
        &[path],
        &columns,
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::WrongColumnType {
                role: ColumnRole::Image,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_file_and_non_parquet_file() {
    let dir = TempDir::new();
    let missing = dir.file("nope.parquet");
    let err = read_parquet_images(
        std::slice::from_ref(&missing),
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::FileMissing { .. }), "{err}");
    assert!(err.to_string().contains("nope.parquet"));

    let text = dir.file("pointer.parquet");
    std::fs::write(
        &text,
        "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",
    )
    .unwrap();
    let err = read_parquet_images(
        &[text],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NotParquet { .. }), "{err}");
    assert!(err.to_string().contains("download it again"), "{err}");

    let err = read_parquet_images(
        &[],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NoFiles));
}

#[test]
fn several_files_other_binary_and_integer_types_numbered_classes() {
    let dir = TempDir::new();
    let a = dir.file("a.parquet");
    let b = dir.file("b.parquet");
    let png = rgb_png(2, 2);
    write(
        &a,
        vec![
            ("img", hf_images(&[Some(png.clone())], true)),
            ("labels", Arc::new(Int32Array::from(vec![4]))),
        ],
        None,
    );
    // A plain binary image column (no struct) and uint8 labels.
    let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values([png.clone(), png]));
    write(
        &b,
        vec![
            ("img", bytes),
            ("labels", Arc::new(UInt8Array::from(vec![1, 0]))),
        ],
        None,
    );
    let columns = ColumnNames::new("img", "labels");
    let d = read_parquet_images(
        &[a, b],
        &columns,
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap();
    assert_eq!(d.labels, vec![4, 1, 0]);
    assert_eq!(d.class_names, vec!["0", "1", "2", "3", "4"]);
}

#[test]
fn bad_labels_are_errors() {
    let dir = TempDir::new();
    let neg = dir.file("neg.parquet");
    write_hf(&neg, &vec![Some(rgb_png(2, 2)); 2], &[0, -1], None);
    let err = read_parquet_images(
        &[neg],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NegativeLabel {
                row: 1,
                value: -1,
                ..
            }
        ),
        "{err}"
    );

    let big = dir.file("big.parquet");
    write_hf(&big, &[Some(rgb_png(2, 2))], &[3], Some(META_3));
    let err = read_parquet_images(
        &[big],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                row: 0,
                value: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("3 class names"), "{err}");

    let null = dir.file("null.parquet");
    write(
        &null,
        vec![
            ("image", hf_images(&[Some(rgb_png(2, 2))], false)),
            ("label", Arc::new(Int64Array::from(vec![None]))),
        ],
        None,
    );
    let err = read_parquet_images(
        &[null],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NullLabel { row: 0, .. }), "{err}");
}

#[test]
fn class_names_must_agree_across_files_and_bad_metadata_warns() {
    let dir = TempDir::new();
    let a = dir.file("a.parquet");
    let b = dir.file("b.parquet");
    let png = rgb_png(2, 2);
    write_hf(&a, &[Some(png.clone())], &[0], Some(META_3));
    let other =
        r#"{"info": {"features": {"label": {"names": ["x", "y"], "_type": "ClassLabel"}}}}"#;
    write_hf(&b, &[Some(png.clone())], &[1], Some(other));
    let err = read_parquet_images(
        &[a.clone(), b.clone()],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::ClassNamesMismatch { .. }), "{err}");

    // A file without metadata, or with malformed metadata, defers to the one that has names.
    write_hf(&b, &[Some(png)], &[1], Some("{broken"));
    let d = read(&[b, a], ColorMode::Rgb, None);
    assert_eq!(d.class_names, vec!["cat", "dog", "bird"]);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("ignoring class names"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn no_decodable_images_is_an_error() {
    let dir = TempDir::new();
    let path = dir.file("empty.parquet");
    write_hf(&path, &[Some(Vec::new()), None], &[0, 0], None);
    let err = read_parquet_images(
        &[path],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NoImages {
                rows: 2,
                skipped: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("zero-byte"), "{err}");
}

#[test]
fn rows_are_numbered_across_batches_and_warnings_are_capped() {
    let dir = TempDir::new();
    let path = dir.file("many.parquet");
    let png = gray_png(1, 1, 255);
    let n = 600;
    // Rows 0..150 are good, then 450 bad rows: more than MAX_ROW_WARNINGS.
    let rows: Vec<Option<Vec<u8>>> = (0..n)
        .map(|i| {
            if i < 150 {
                Some(png.clone())
            } else {
                Some(Vec::new())
            }
        })
        .collect();
    write_hf(&path, &rows, &vec![0; n], None);
    let d = read(&[path], ColorMode::Grayscale, None);
    assert_eq!((d.len(), d.skipped), (150, 450));
    assert_eq!(d.warnings.len(), MAX_ROW_WARNINGS + 1);
    assert!(d.warnings[0].contains("row 150 "), "{}", d.warnings[0]);
    assert!(d.warnings[99].contains("row 249 "), "{}", d.warnings[99]);
    assert!(
        d.warnings[100].contains("350 more rows"),
        "{}",
        d.warnings[100]
    );

    // A bad label in the second batch is reported with its file row number.
    let dir2 = TempDir::new();
    let path = dir2.file("late.parquet");
    let mut labels = vec![0; 300];
    labels[290] = -5;
    write_hf(&path, &vec![Some(png); 300], &labels, None);
    let err = read_parquet_images(
        &[path],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Grayscale, None, ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::NegativeLabel { row: 290, .. }),
        "{err}"
    );
}

#[test]
fn invalid_size_is_rejected_before_reading() {
    let err = read_parquet_images(
        &[PathBuf::from("/nonexistent.parquet")],
        &ColumnNames::default(),
        DecodeSpec::new(ColorMode::Rgb, Some((0, 32)), ResizeMode::Squash),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidSize {
                height: 0,
                width: 32
            }
        ),
        "{err}"
    );
}
