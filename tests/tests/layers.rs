//! The shim's files are layered: `shim/nginx/src/lib.rs` lists them top
//! first, and each file may import only files listed after it. So no file
//! imports from a file that imports it. A file cut into a folder
//! (`bridge.rs` and `bridge/`) lists its own files the same way: each
//! imports only the ones listed after it (`super::`), and the crate's
//! files below the folder's.
use std::collections::BTreeSet;
use std::path::Path;

/// The names `text` imports through `prefix` (`crate::`, `super::`).
fn imports(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a, b::c};
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or("");
                if !name.is_empty() {
                    found.insert(name.to_string());
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn each_file_imports_only_files_below_it() {
    let src = graft_tests::root().join("shim/nginx/src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    // The order: lib.rs's "//! - [`name`]" lines, top first.
    let order = listed_files(&lib);
    let mut files = rust_files(&src);
    files.retain(|n| n != "lib");
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        listed, files,
        "lib.rs lists every file of shim/nginx/src once"
    );
    let mut wrong = Vec::new();
    let mut folders = 0;
    for (rank, file) in order.iter().enumerate() {
        let text = std::fs::read_to_string(src.join(format!("{file}.rs"))).unwrap();
        check_crate_imports(&order, rank, file, &text, &mut wrong);
        let folder = src.join(file);
        if !folder.is_dir() {
            continue;
        }
        folders += 1;
        // A folder's files: listed in `<file>.rs` top first, each importing
        // only its siblings listed after it, and the crate's files below
        // the folder.
        let inner = listed_files(&text);
        let mut sorted = inner.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            rust_files(&folder),
            "{file}.rs lists every file of {file}/ once"
        );
        for (inner_rank, name) in inner.iter().enumerate() {
            let path = format!("{file}/{name}");
            let text = std::fs::read_to_string(folder.join(format!("{name}.rs"))).unwrap();
            check_crate_imports(&order, rank, &path, &text, &mut wrong);
            for import in imports(&text, "super::") {
                match inner.iter().position(|o| *o == import) {
                    Some(r) if r > inner_rank => {}
                    Some(_) => wrong.push(format!("{path}.rs imports {import}, listed above it")),
                    None => wrong.push(format!(
                        "{path}.rs imports super::{import}, not a listed file"
                    )),
                }
            }
        }
    }
    assert!(folders >= 1, "no folder of files in shim/nginx/src");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The `//! - [`name`]` lines of a file, top first.
fn listed_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The `.rs` files of a folder, by name without `.rs`, sorted.
fn rust_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    files.sort();
    files
}

/// `file`'s `crate::` imports must be files of lib.rs's list below `rank`.
fn check_crate_imports(
    order: &[String],
    rank: usize,
    file: &str,
    text: &str,
    wrong: &mut Vec<String>,
) {
    for import in imports(text, "crate::") {
        match order.iter().position(|o| *o == import) {
            Some(r) if r > rank => {}
            Some(_) => wrong.push(format!("{file}.rs imports {import}, listed above it")),
            None => wrong.push(format!(
                "{file}.rs imports crate::{import}, not a listed file"
            )),
        }
    }
}
