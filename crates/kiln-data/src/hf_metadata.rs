//! Class names from the `huggingface` key of a parquet file's key-value metadata.
//!
//! The `datasets` library stores its `Features` there as JSON, e.g.
//! `{"info": {"features": {"label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}}}`.
//! Labels in the file are indices into `names`, so this is the only place the human-readable
//! class names live.

use serde_json::Value;

/// The parquet key-value metadata key the `datasets` library writes.
pub const HF_METADATA_KEY: &str = "huggingface";

/// Extracts the class names of `label_column` from the `huggingface` metadata JSON.
///
/// `Ok(None)` when the metadata does not describe that column as a `ClassLabel` with names
/// (a plain integer feature, or another column): the caller then numbers the classes.
/// `Err` describes malformed metadata; the caller reports it as a warning, since the labels
/// themselves are still usable.
pub fn class_names_from_hf_metadata(
    json: &str,
    label_column: &str,
) -> Result<Option<Vec<String>>, String> {
    let root: Value = serde_json::from_str(json)
        .map_err(|e| format!("`{HF_METADATA_KEY}` metadata is not valid JSON: {e}"))?;
    // Current `datasets` nest features under "info"; accept a bare "features" too.
    let features = root
        .get("info")
        .and_then(|info| info.get("features"))
        .or_else(|| root.get("features"));
    let Some(feature) = features.and_then(|f| f.get(label_column)) else {
        return Ok(None);
    };
    if feature.get("_type").and_then(Value::as_str) != Some("ClassLabel") {
        return Ok(None);
    }
    let Some(names) = feature.get("names") else {
        return Ok(None);
    };
    let names = names.as_array().ok_or_else(|| {
        format!("`{HF_METADATA_KEY}` metadata: names of `{label_column}` are not a list")
    })?;
    names
        .iter()
        .map(|n| {
            n.as_str().map(str::to_owned).ok_or_else(|| {
                format!("`{HF_METADATA_KEY}` metadata: a class name of `{label_column}` is not a string: {n}")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: &str = r#"{"info": {"features": {"image": {"_type": "Image"},
        "label": {"names": ["0","1","2"], "_type": "ClassLabel"}}}}"#;

    #[test]
    fn reads_names_of_the_configured_column() {
        assert_eq!(
            class_names_from_hf_metadata(MNIST, "label").unwrap(),
            Some(vec!["0".into(), "1".into(), "2".into()])
        );
    }

    #[test]
    fn other_or_non_classlabel_columns_have_no_names() {
        assert_eq!(class_names_from_hf_metadata(MNIST, "labels").unwrap(), None);
        assert_eq!(class_names_from_hf_metadata(MNIST, "image").unwrap(), None);
        let plain = r#"{"info": {"features": {"label": {"dtype": "int64", "_type": "Value"}}}}"#;
        assert_eq!(class_names_from_hf_metadata(plain, "label").unwrap(), None);
    }

    #[test]
    fn bare_features_layout_is_accepted() {
        let json = r#"{"features": {"labels": {"names": ["cat","dog"], "_type": "ClassLabel"}}}"#;
        assert_eq!(
            class_names_from_hf_metadata(json, "labels").unwrap(),
            Some(vec!["cat".into(), "dog".into()])
        );
    }

    #[test]
    fn malformed_metadata_is_an_error_message() {
        assert!(class_names_from_hf_metadata("{not json", "label").is_err());
        let bad = r#"{"info": {"features": {"label": {"names": [1, 2], "_type": "ClassLabel"}}}}"#;
        assert!(class_names_from_hf_metadata(bad, "label").is_err());
    }
}
