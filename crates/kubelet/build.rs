//! Generates the CSI (csi.v1) and kubelet plugin registration (pluginregistration) gRPC code from
//! the vendored protos in `proto/`. Needs `protoc` (hack/env-up.sh installs protobuf-compiler).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    if let Err(e) = tonic_prost_build::configure()
        .compile_protos(&["proto/csi/v1/csi.proto", "proto/pluginregistration/v1/api.proto"], &["proto"])
    {
        panic!("generating the CSI and plugin registration gRPC code: {e}");
    }
}
