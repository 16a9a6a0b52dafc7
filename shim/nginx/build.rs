//! Passes nginx-sys's view of the nginx build (version, features, OS) on to
//! this crate as cfgs, as the `ngx` crate's own build script does.
fn main() {
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
