//! Generates the CSI (csi.v1), kubelet plugin registration (pluginregistration) and containerd
//! events (containerd.services.events.v1, containerd.events) gRPC code from the vendored protos in
//! `proto/`. Needs `protoc` (hack/env-up.sh installs protobuf-compiler).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    if let Err(e) = tonic_prost_build::configure().compile_protos(
        &[
            "proto/csi/v1/csi.proto",
            "proto/pluginregistration/v1/api.proto",
            "proto/containerd/services/events/v1/events.proto",
            "proto/containerd/events/task.proto",
        ],
        &["proto"],
    ) {
        panic!("generating the CSI, plugin registration and containerd events gRPC code: {e}");
    }
}
