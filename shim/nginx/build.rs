//! Passes nginx-sys's view of the nginx build (version, features, OS) on to
//! this crate as cfgs, as the `ngx` crate's own build script does.
fn main() {
    // The nginx versions whose structures graft's code tells apart:
    // nginx1_23_0, where the request's Cookie and X-Forwarded-For became
    // lists linked through each header's `next` (arrays before).
    const VERSIONS: &[(u64, &str)] = &[(1_023_000, "nginx1_23_0")];
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version = std::env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    for (number, cfg) in VERSIONS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if version.is_some_and(|v| v >= *number) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    for (var, cfg) in [
        ("DEP_NGINX_FEATURES", "ngx_feature"),
        ("DEP_NGINX_OS", "ngx_os"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rerun-if-env-changed={var}_CHECK");
        let values = std::env::var(format!("{var}_CHECK")).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({values}))");
        if let Ok(list) = std::env::var(var) {
            for v in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{v}\"");
            }
        }
    }
}
