//! Records the git commit the pipeline was built from (`KILN_GIT_COMMIT`), for the run
//! manifest. Reads `.git` directly (no `git` binary needed) and watches only files that exist,
//! so an unchanged checkout never reruns this script.

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let Some(git_dir) = manifest_dir
        .ancestors()
        .map(|dir| dir.join(".git"))
        .find(|git| git.is_dir())
    else {
        return;
    };
    if let Some(commit) = head_commit(&git_dir) {
        println!("cargo:rustc-env=KILN_GIT_COMMIT={commit}");
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn head_commit(git_dir: &Path) -> Option<String> {
    let head_file = git_dir.join("HEAD");
    watch(&head_file);
    let head = std::fs::read_to_string(&head_file).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_commit(head).then(|| head.to_owned());
    };
    let loose = git_dir.join(reference);
    watch(&git_dir.join("refs/heads"));
    watch(&loose);
    let packed = git_dir.join("packed-refs");
    watch(&packed);
    if let Ok(commit) = std::fs::read_to_string(&loose) {
        let commit = commit.trim();
        return is_commit(commit).then(|| commit.to_owned());
    }
    let packed = std::fs::read_to_string(packed).ok()?;
    packed.lines().find_map(|line| {
        let (commit, name) = line.split_once(' ')?;
        (name == reference && is_commit(commit)).then(|| commit.to_owned())
    })
}

fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
