//! Compiles every `.proto` under `proto/oms` (plus the vendored google.rpc
//! error types, so reflection can describe error details) with protox: no
//! system `protoc` is needed to build the workspace.
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled (`env!`): checkouts
    // sharing a target dir share the compiled script, which would otherwise
    // read the protos of the checkout that compiled it.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let third_party = root.join("third_party");
    let mut files = Vec::new();
    collect(&root.join("oms"), &mut files)?;
    // Names relative to their include root, as imports spell them.
    let mut files: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).map(|p| p.display().to_string()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for rpc in ["status.proto", "error_details.proto", "code.proto"] {
        files.push(format!("google/rpc/{rpc}"));
    }
    // Relative (to this package), not absolute: checkouts that share one
    // target dir (CI's clone and the working tree) share this build
    // script's fingerprint, and an absolute path would watch the protos of
    // whichever checkout built last.
    println!("cargo:rerun-if-changed=../../proto");

    let fds = protox::compile(&files, [&root, &third_party])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("oms_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Unbuilt methods answer UNIMPLEMENTED and streams are boxed, so a
        // service implements only what it has built.
        .generate_default_stubs(true)
        // Deterministic encoding: request hashes for idempotency must not
        // depend on map iteration order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
