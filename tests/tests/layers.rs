//! The shim's files are layered: `shim/nginx/src/lib.rs` lists them top
//! first, and each file may import only files listed after it. So no file
//! imports from a file that imports it.
use std::collections::BTreeSet;

fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
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
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .filter(|n| n != "lib")
        .collect();
    files.sort();
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        listed, files,
        "lib.rs lists every file of shim/nginx/src once"
    );
    let mut wrong = Vec::new();
    for (rank, file) in order.iter().enumerate() {
        let text = std::fs::read_to_string(src.join(format!("{file}.rs"))).unwrap();
        for import in crate_imports(&text) {
            match order.iter().position(|o| *o == import) {
                Some(r) if r > rank => {}
                Some(_) => wrong.push(format!("{file}.rs imports {import}, listed above it")),
                None => wrong.push(format!(
                    "{file}.rs imports crate::{import}, not a listed file"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
