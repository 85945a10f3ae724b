//! The image-folder layout most users have: `root/<class>/*.{jpg,jpeg,png}`, one directory per
//! class, classes sorted by name (as Keras' `image_dataset_from_directory` and torchvision's
//! `ImageFolder` order them). Decoded in parallel; unreadable images are skipped and counted.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::decode::{DecodeSpec, decode_image};
use crate::{DataError, ImageDataset};

/// Per-file skip warnings kept (the count is always complete).
const MAX_WARNINGS: usize = 100;

/// An image folder's class names (sorted) and each image file with its class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    pub class_names: Vec<String>,
    pub files: Vec<(PathBuf, u32)>,
}

/// Lists `root/<class>/*.{jpg,jpeg,png}` (hidden directories ignored).
pub fn list_image_folder(root: &Path) -> Result<FolderListing, DataError> {
    let read_dir = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| {
            DataError::Folder(format!(
                "cannot read image folder {}: {e}; expected root/<class>/<image> files",
                dir.display()
            ))
        })
    };
    let mut classes: Vec<(String, PathBuf)> = read_dir(root)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            (!name.starts_with('.')).then_some((name, path))
        })
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Folder(format!(
            "image folder {} has no class directories; expected root/<class>/<image> (e.g. root/cat/1.jpg)",
            root.display()
        )));
    }
    let mut files = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let mut images: Vec<PathBuf> = read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && is_image_file(path))
            .collect();
        images.sort();
        files.extend(images.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(DataError::Folder(format!(
            "image folder {} has class directories but no .jpg, .jpeg or .png files in them",
            root.display()
        )));
    }
    Ok(FolderListing {
        class_names: classes.into_iter().map(|(name, _)| name).collect(),
        files,
    })
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Reads `root/<class>/*` with `decode`. Without a fixed size, every image must decode to
/// the first one's size.
pub fn read_image_folder(root: &Path, decode: DecodeSpec) -> Result<ImageDataset, DataError> {
    let FolderListing { class_names, files } = list_image_folder(root)?;
    let target = match decode.size {
        Some((h, w)) => Some(
            u32::try_from(h)
                .ok()
                .zip(u32::try_from(w).ok())
                .filter(|&(h, w)| h > 0 && w > 0)
                .ok_or(DataError::InvalidSize {
                    height: h,
                    width: w,
                })?,
        ),
        None => None,
    };
    let decoded: Vec<Result<_, String>> = files
        .par_iter()
        .map(|(path, _)| {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
            decode_image(&bytes, decode.color, target, decode.resize)
        })
        .collect();
    let channels = decode.color.channels();
    let mut dataset = ImageDataset {
        images: Vec::new(),
        labels: Vec::new(),
        height: 0,
        width: 0,
        channels,
        class_names,
        skipped: 0,
        warnings: Vec::new(),
        normalization: crate::Normalization::identity(),
    };
    let mut dims = None;
    for ((path, label), image) in files.iter().zip(decoded) {
        match image {
            Ok(image) => {
                let these = (image.height, image.width);
                let expected = *dims.get_or_insert(these);
                if these != expected {
                    return Err(DataError::Folder(format!(
                        "{} is {}×{} but earlier images are {}×{}; set [data] image_size to resize them all",
                        path.display(),
                        these.0,
                        these.1,
                        expected.0,
                        expected.1
                    )));
                }
                dataset.images.extend_from_slice(&image.pixels);
                dataset.labels.push(*label);
            }
            Err(reason) => {
                dataset.skipped += 1;
                if dataset.warnings.len() < MAX_WARNINGS {
                    dataset
                        .warnings
                        .push(format!("skipped {}: {reason}", path.display()));
                }
            }
        }
    }
    if dataset.skipped > MAX_WARNINGS {
        dataset.warnings.push(format!(
            "… and {} more skipped images",
            dataset.skipped - MAX_WARNINGS
        ));
    }
    let Some((height, width)) = dims else {
        return Err(DataError::Folder(format!(
            "no image in {} could be decoded ({} skipped)",
            root.display(),
            dataset.skipped
        )));
    };
    dataset.height = height;
    dataset.width = width;
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{gray_png, rgb_png};
    use crate::{ColorMode, ResizeMode};

    #[test]
    fn classes_are_sorted_directories_and_corrupt_files_are_counted() {
        let root = std::env::temp_dir().join(format!("kiln-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for class in ["dog", "cat"] {
            std::fs::create_dir_all(root.join(class)).unwrap();
        }
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("cat/a.png"), rgb_png(6, 4)).unwrap();
        std::fs::write(root.join("cat/b.PNG"), gray_png(3, 3, 9)).unwrap();
        std::fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("dog/c.jpg"), b"truncated").unwrap();
        std::fs::write(root.join("dog/d.png"), rgb_png(5, 5)).unwrap();

        let decode = DecodeSpec::new(ColorMode::Rgb, Some((4, 4)), ResizeMode::CenterCrop);
        let data = read_image_folder(&root, decode).unwrap();
        assert_eq!(data.class_names, ["cat", "dog"]);
        assert_eq!(data.labels, [0, 0, 1]);
        assert_eq!((data.height, data.width, data.channels), (4, 4, 3));
        assert_eq!(data.skipped, 1);
        assert!(data.warnings[0].contains("c.jpg"), "{:?}", data.warnings);

        let err = read_image_folder(&root.join("cat"), decode).unwrap_err();
        assert!(err.to_string().contains("no class directories"), "{err}");
        let err = read_image_folder(&root.join("missing"), decode).unwrap_err();
        assert!(
            err.to_string().contains("cannot read image folder"),
            "{err}"
        );
        let any_size = DecodeSpec::new(ColorMode::Rgb, None, ResizeMode::CenterCrop);
        let err = read_image_folder(&root, any_size).unwrap_err();
        assert!(err.to_string().contains("image_size"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
