//! Typed access to the image and label columns of an arrow record batch.
//!
//! Parquet writers disagree on physical types (pyarrow writes `binary` or `large_binary`,
//! int64 or int32 labels, and newer readers may hand back view types), so the accepted set
//! is checked once against the schema and then read through these small adapters.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrowPrimitiveType, BinaryArray, BinaryViewArray, LargeBinaryArray, StructArray,
};
use arrow_schema::DataType;

/// Human-readable description of the accepted image column types, for errors.
pub(crate) const IMAGE_TYPE_EXPECTED: &str =
    "struct<bytes: binary, path: string> (the Hugging Face Image feature) or binary";

/// Human-readable description of the accepted label column types, for errors.
pub(crate) const LABEL_TYPE_EXPECTED: &str = "an integer type (int64, int32, uint8, ...)";

/// The name of the bytes field inside a Hugging Face Image struct.
const BYTES_FIELD: &str = "bytes";
/// The name of the original-file-path field inside a Hugging Face Image struct.
const PATH_FIELD: &str = "path";

fn is_binary(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// Whether a column of this type can hold encoded images.
pub(crate) fn is_image_type(dt: &DataType) -> bool {
    match dt {
        DataType::Struct(fields) => fields
            .iter()
            .any(|f| f.name() == BYTES_FIELD && is_binary(f.data_type())),
        other => is_binary(other),
    }
}

/// Whether a column of this type can hold class labels.
pub(crate) fn is_label_type(dt: &DataType) -> bool {
    dt.is_integer()
}

/// One of the binary array flavours.
enum Bytes<'a> {
    Small(&'a BinaryArray),
    Large(&'a LargeBinaryArray),
    View(&'a BinaryViewArray),
}

impl<'a> Bytes<'a> {
    fn from_array(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Binary => array.as_binary_opt::<i32>().map(Bytes::Small),
            DataType::LargeBinary => array.as_binary_opt::<i64>().map(Bytes::Large),
            DataType::BinaryView => array.as_binary_view_opt().map(Bytes::View),
            _ => None,
        }
    }

    fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            Bytes::Small(a) => (!a.is_null(i)).then(|| a.value(i)),
            Bytes::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            Bytes::View(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

/// Read access to an image column: the encoded bytes, and the original file path when the
/// Hugging Face struct carries one (it makes skip warnings traceable to a source image).
pub(crate) struct ImageColumn<'a> {
    /// The struct, when the column is a struct: its own nulls mask the row.
    parent: Option<&'a StructArray>,
    bytes: Bytes<'a>,
    paths: Option<&'a dyn Array>,
}

impl<'a> ImageColumn<'a> {
    /// `None` if the array is not of an accepted image type.
    pub(crate) fn from_array(array: &'a dyn Array) -> Option<Self> {
        if let Some(parent) = array.as_struct_opt() {
            let bytes = Bytes::from_array(parent.column_by_name(BYTES_FIELD)?.as_ref())?;
            let paths = parent.column_by_name(PATH_FIELD).map(|p| p.as_ref());
            Some(ImageColumn {
                parent: Some(parent),
                bytes,
                paths,
            })
        } else {
            Some(ImageColumn {
                parent: None,
                bytes: Bytes::from_array(array)?,
                paths: None,
            })
        }
    }

    /// The encoded image of row `i`; `None` if the row (or its bytes) is null.
    pub(crate) fn bytes(&self, i: usize) -> Option<&'a [u8]> {
        if self.parent.is_some_and(|p| p.is_null(i)) {
            return None;
        }
        self.bytes.get(i)
    }

    /// The original file name of row `i`, if recorded.
    pub(crate) fn path(&self, i: usize) -> Option<&'a str> {
        if self.parent.is_some_and(|p| p.is_null(i)) {
            return None;
        }
        let paths = self.paths?;
        match paths.data_type() {
            DataType::Utf8 => {
                let a = paths.as_string_opt::<i32>()?;
                a.is_valid(i).then(|| a.value(i))
            }
            DataType::LargeUtf8 => {
                let a = paths.as_string_opt::<i64>()?;
                a.is_valid(i).then(|| a.value(i))
            }
            DataType::Utf8View => {
                let a = paths.as_string_view_opt()?;
                a.is_valid(i).then(|| a.value(i))
            }
            _ => None,
        }
    }
}

/// Widens every label to `i128` (which holds any integer type exactly); `None` for a null
/// row. Returns `None` overall if the array is not an integer array.
pub(crate) fn labels_as_i128(array: &dyn Array) -> Option<Vec<Option<i128>>> {
    fn widen<T: ArrowPrimitiveType>(array: &dyn Array) -> Option<Vec<Option<i128>>>
    where
        T::Native: Into<i128>,
    {
        Some(
            array
                .as_primitive_opt::<T>()?
                .iter()
                .map(|v| v.map(Into::into))
                .collect(),
        )
    }
    match array.data_type() {
        DataType::Int8 => widen::<Int8Type>(array),
        DataType::Int16 => widen::<Int16Type>(array),
        DataType::Int32 => widen::<Int32Type>(array),
        DataType::Int64 => widen::<Int64Type>(array),
        DataType::UInt8 => widen::<UInt8Type>(array),
        DataType::UInt16 => widen::<UInt16Type>(array),
        DataType::UInt32 => widen::<UInt32Type>(array),
        DataType::UInt64 => widen::<UInt64Type>(array),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray, UInt8Array};
    use arrow_schema::{Field, Fields};
    use std::sync::Arc;

    #[test]
    fn accepted_types() {
        let hf = DataType::Struct(Fields::from(vec![
            Field::new("bytes", DataType::LargeBinary, true),
            Field::new("path", DataType::Utf8, true),
        ]));
        assert!(is_image_type(&hf));
        assert!(is_image_type(&DataType::Binary));
        assert!(!is_image_type(&DataType::Utf8));
        let no_bytes =
            DataType::Struct(Fields::from(vec![Field::new("path", DataType::Utf8, true)]));
        assert!(!is_image_type(&no_bytes));
        assert!(is_label_type(&DataType::UInt8));
        assert!(!is_label_type(&DataType::Float32));
    }

    #[test]
    fn struct_nulls_and_paths() {
        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&b"ab"[..]), Some(b"cd")]));
        let paths: ArrayRef = Arc::new(StringArray::from(vec![Some("a.png"), None]));
        let s = StructArray::try_new(
            Fields::from(vec![
                Field::new("bytes", DataType::Binary, true),
                Field::new("path", DataType::Utf8, true),
            ]),
            vec![bytes, paths],
            Some(vec![true, false].into()),
        )
        .unwrap();
        let col = ImageColumn::from_array(&s).unwrap();
        assert_eq!(col.bytes(0), Some(&b"ab"[..]));
        assert_eq!(col.path(0), Some("a.png"));
        assert_eq!(col.bytes(1), None);
        assert_eq!(col.path(1), None);
    }

    #[test]
    fn labels_widen_from_any_integer_type() {
        let a = Int64Array::from(vec![Some(-1), None, Some(3)]);
        assert_eq!(labels_as_i128(&a), Some(vec![Some(-1), None, Some(3)]));
        let b = UInt8Array::from(vec![255]);
        assert_eq!(labels_as_i128(&b), Some(vec![Some(255)]));
        assert_eq!(labels_as_i128(&StringArray::from(vec!["x"])), None);
    }
}
