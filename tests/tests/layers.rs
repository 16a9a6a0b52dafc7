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

/// Each package's dependencies, as `Cargo.lock` resolves them (by name).
fn locked_dependencies() -> std::collections::BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(graft_tests::root().join("Cargo.lock")).unwrap();
    let mut packages = std::collections::BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap();
        let deps = block
            .split_once("dependencies = [")
            .map_or(Vec::new(), |(_, rest)| {
                rest[..rest.find(']').unwrap()]
                    .split(',')
                    .filter_map(|d| d.trim().trim_matches('"').split(' ').next())
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect()
            });
        packages.entry(name).or_insert_with(Vec::new).extend(deps);
    }
    packages
}

/// The crates a package needs, itself included, all the way down.
fn closure(deps: &std::collections::BTreeMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(deps.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

/// The step protocol and the modules sit below every server that drives
/// them: the engine (`graft_engine::protocol`) and each product module
/// know no server (nginx, Lua, Pingora, an async runtime), and no module
/// knows the engine. So nginx's bridge, its native phases and graft-edge
/// all drive the same protocol, and none of them can reach into another.
/// Nor do they know the harness (`graft-tests`) or the user tools over it
/// (`graft-tools`); the tools run on the harness, not the other way round.
#[test]
fn the_engine_and_the_modules_know_no_server() {
    let deps = locked_dependencies();
    let servers = [
        "ngx",
        "nginx-sys",
        "mlua",
        "pingora-core",
        "pingora-proxy",
        "tokio",
        "graft-nginx",
        "graft-edge",
        "graft-agent",
        "graft-tests",
        "graft-tools",
    ];
    let modules: Vec<String> = deps
        .keys()
        .filter(|n| {
            n.starts_with("graft-") && {
                let dir = n.trim_start_matches("graft-").replace('-', "_");
                graft_tests::root().join("modules").join(dir).is_dir()
            }
        })
        .cloned()
        .collect();
    assert!(modules.len() >= 8, "the modules found: {modules:?}");
    let mut wrong = Vec::new();
    for package in modules
        .iter()
        .map(String::as_str)
        .chain(["graft-engine", "graft-contract"])
    {
        let below = closure(&deps, package);
        for server in servers {
            if below.contains(server) {
                wrong.push(format!("{package} depends on {server}"));
            }
        }
        if package != "graft-engine" && below.contains("graft-engine") {
            wrong.push(format!("{package} depends on graft-engine"));
        }
    }
    // And every server does drive the engine.
    for server in ["graft-nginx", "graft-edge"] {
        assert!(closure(&deps, server).contains("graft-engine"), "{server}");
    }
    assert!(
        closure(&deps, "graft-tools").contains("graft-tests"),
        "graft-tools runs on the harness"
    );
    assert!(
        !closure(&deps, "graft-tests").contains("graft-tools"),
        "the harness depends on graft-tools"
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}
