//! No module of any workspace crate imports, directly or through others, a module that
//! imports it back: every crate's files form a layered graph a reader can follow top-down.
//!
//! Edges come from `crate::…` and `super::…` paths (imports and inline paths) outside
//! comments and strings; a path through a name the crate root re-exports
//! (`crate::Classifier`) counts as a path to the module that defines it. Generated code and
//! `#[cfg(test)]` modules (which sit at the end of a file and may exercise neighbours) are
//! skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "generated") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a::b` for src/a/b.rs or src/a/b/mod.rs; "" for src/lib.rs and src/main.rs.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of `text` without comments (line comments, doc comments, block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if rest.starts_with("/*") {
            rest = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else if rest.starts_with('"') {
            // Skip string literals (paths in messages are not imports).
            let end = rest[1..]
                .char_indices()
                .scan(false, |escaped, (i, c)| {
                    let close = c == '"' && !*escaped;
                    *escaped = c == '\\' && !*escaped;
                    Some((i, close))
                })
                .find(|&(_, close)| close)
                .map_or(rest.len(), |(i, _)| i + 2);
            out.push_str("\"\"");
            rest = &rest[end.min(rest.len())..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Identifier segments of every path starting at `prefix` (`crate::a::{b, c}` gives
/// [a, b] and [a, c]; nested groups are flattened one level).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let ident = |s: &'a str| -> (&'a str, &'a str) {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (&s[..end], &s[end..])
    };
    let mut paths = Vec::new();
    let mut search = code;
    while let Some(at) = search.find(prefix) {
        let before = search[..at].chars().last();
        let mut rest = &search[at + prefix.len()..];
        search = rest;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut segments = Vec::new();
        loop {
            let (name, after) = ident(rest);
            if name.is_empty() {
                if let Some(group) = rest.strip_prefix('{') {
                    let close = group.find('}').unwrap_or(group.len());
                    for item in group[..close].split(',') {
                        let item = item.trim();
                        let (name, _) = ident(item);
                        if !name.is_empty() {
                            let mut path = segments.clone();
                            path.push(name);
                            paths.push(path);
                        }
                    }
                    segments.clear();
                }
                break;
            }
            segments.push(name);
            match after.strip_prefix("::") {
                Some(next) => rest = next,
                None => break,
            }
        }
        if !segments.is_empty() {
            paths.push(segments);
        }
    }
    paths
}

/// The deepest module of `modules` that `path` (segments under the crate root) goes through.
fn target(
    path: &[&str],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Option<String> {
    if path.len() == 1
        && let Some(module) = reexports.get(path[0])
    {
        return Some(module.clone());
    }
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn cycles_in(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    // `pub use module::{Item, …}` at the crate root: Item lives in `module`.
    let mut reexports = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root)) else {
            continue;
        };
        let root_code = code(&text);
        for statement in root_code.split(';') {
            let Some(used) = statement.trim().strip_prefix("pub use ") else {
                continue;
            };
            for path in paths_after(&format!(" {used}"), " ") {
                if let (Some(item), Some(module)) = (
                    path.last(),
                    target(
                        &path[..path.len().saturating_sub(1)],
                        &modules,
                        &BTreeMap::new(),
                    ),
                ) {
                    reexports.insert((*item).to_owned(), module);
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        let source = std::fs::read_to_string(file).unwrap();
        let text = code(source.split("#[cfg(test)]").next().unwrap_or_default());
        let mut targets = BTreeSet::new();
        for path in paths_after(&text, "crate::") {
            targets.extend(target(&path, &modules, &reexports));
        }
        let module: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
        // `super` of module a::b (a/b.rs or a/b/mod.rs) is a.
        let base = &module[..module.len().saturating_sub(1)];
        for path in paths_after(&text, "super::") {
            let full: Vec<&str> = base.iter().copied().chain(path.iter().copied()).collect();
            targets.extend(target(&full, &modules, &reexports));
        }
        targets.remove(&from);
        targets.remove("");
        edges.entry(from).or_default().extend(targets);
    }
    // Depth-first search for back edges.
    let mut cycles = Vec::new();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|n| *n == next).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[start..].to_vec();
                    cycle.push(next);
                    cycles.push(cycle.join(" → "));
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    for node in edges.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

#[test]
fn no_crate_has_an_import_circle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut problems = Vec::new();
    let mut crates = 0;
    for dir in ["crates", "examples"] {
        for entry in std::fs::read_dir(workspace.join(dir)).unwrap() {
            let src = entry.unwrap().path().join("src");
            if src.is_dir() {
                crates += 1;
                for cycle in cycles_in(&src) {
                    problems.push(format!("{}: {cycle}", src.display()));
                }
            }
        }
    }
    assert!(crates >= 8, "found only {crates} crates");
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_a_circle() {
    let dir = std::env::temp_dir().join(format!("kiln-module-graph-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src/stages")).unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "mod a;\nmod stages;\npub use a::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/a.rs"),
        "use crate::stages::b::f; // crate::ignored\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/stages/mod.rs"), "pub mod b;\n").unwrap();
    std::fs::write(
        dir.join("src/stages/b.rs"),
        "pub fn f() -> crate::Thing { let _ = \"crate::a\"; crate::Thing }\n",
    )
    .unwrap();
    let cycles = cycles_in(&dir.join("src"));
    assert_eq!(cycles, ["a → stages::b → a"]);
    std::fs::write(dir.join("src/stages/b.rs"), "pub fn f() {}\n").unwrap();
    assert!(cycles_in(&dir.join("src")).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
