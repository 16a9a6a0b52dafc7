//! `make new-module NAME=...` on a scratch copy of graft: the module it
//! writes builds into the nginx module, passes its own tests, and decides
//! alike in Lua and Rust through nginx, with nothing edited by hand.
use std::path::Path;
use std::process::{Command, Output};

use graft_tests::{root, run_ok};

fn run(dir: &Path, cmd: &mut Command) -> Output {
    run_ok(cmd.current_dir(dir))
}

#[test]
fn a_new_module_builds_and_passes_its_parity_test() {
    let root = root();
    let scratch = std::env::temp_dir().join(format!("graft-new-module-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    // The working tree as it is, without build output.
    let files = run(
        &root,
        Command::new("git").args(["ls-files", "-co", "--exclude-standard", "-z"]),
    )
    .stdout;
    for f in files.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let f = Path::new(std::str::from_utf8(f).unwrap());
        if !root.join(f).is_file() {
            continue;
        }
        std::fs::create_dir_all(scratch.join(f).parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), scratch.join(f)).unwrap();
    }
    run(
        &scratch,
        Command::new("make").args(["-s", "new-module", "NAME=geo_block"]),
    );
    assert!(scratch.join("modules/geo_block/src/lib.rs").is_file());
    run(
        &scratch,
        Command::new("cargo").args(["fmt", "--all", "--check"]),
    );
    // Its own build directory (kept between runs), the distribution's
    // nginx configured once by the main build.
    let target = root.join("target/new-module");
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args)
            .env("CARGO_TARGET_DIR", &target)
            .env("NGINX_BUILD_DIR", root.join("build/nginx"))
            .env(
                "GRAFT_MODULE",
                target.join("release/libngx_http_graft_module.so"),
            );
        c
    };
    run(
        &scratch,
        &mut cargo(&[
            "build",
            "--release",
            "-q",
            "-p",
            "graft-nginx",
            "--features",
            "probe",
        ]),
    );
    let unit = run(
        &scratch,
        &mut cargo(&["test", "--release", "-q", "-p", "graft-geo-block"]),
    );
    let unit = String::from_utf8_lossy(&unit.stdout).into_owned();
    assert!(unit.contains("test result: ok. 3 passed"), "{unit}");
    let parity = run(
        &scratch,
        &mut cargo(&[
            "test",
            "--release",
            "-q",
            "-p",
            "graft-tests",
            "--test",
            "parity_geo_block",
        ]),
    );
    let parity = String::from_utf8_lossy(&parity.stdout).into_owned();
    assert!(parity.contains("test result: ok. 1 passed"), "{parity}");
    let _ = std::fs::remove_dir_all(&scratch);
}
