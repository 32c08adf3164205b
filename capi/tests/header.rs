//! `include/vuer_client.h` is what cbindgen generates from `src/lib.rs`
//! (with `cbindgen.toml`): CI fails when the code changed and the committed
//! header did not. `UPDATE_HEADER=1 cargo test -p vuer-client-c --test
//! header` rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_matches_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = dir.join("include/vuer_client.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "capi/include/vuer_client.h is out of date: run \
         UPDATE_HEADER=1 cargo test -p vuer-client-c --test header"
    );
}
