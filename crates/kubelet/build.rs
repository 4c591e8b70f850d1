//! Generates the gRPC code of the CRI (runtime.v1), CSI (csi.v1), kubelet plugin registration
//! (pluginregistration), containerd events (containerd.services.events.v1, containerd.events),
//! the device plugin API (v1beta1) and the pod resources API (v1)
//! from the vendored protos in `proto/`.
//!
//! The protos are parsed by `protox`, a protobuf compiler written in Rust that carries the
//! well-known types (`google/protobuf/*.proto`) itself, so this build needs neither `protoc` nor
//! the system's protobuf include files (a fresh Debian machine has neither: issue 14). The CRI
//! bindings are generated here too instead of taken from the `k8s-cri` crate: that crate's build
//! script runs `protoc`. `proto/cri-api/runtime/v1/api.proto` is the same upstream file
//! (kubernetes/cri-api at 7d8ade91, as k8s-cri 0.11 ships it), so the types are the same.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let protos = [
        "proto/cri-api/runtime/v1/api.proto",
        "proto/csi/v1/csi.proto",
        "proto/pluginregistration/v1/api.proto",
        "proto/containerd/services/events/v1/events.proto",
        "proto/containerd/events/task.proto",
        "proto/deviceplugin/v1beta1/api.proto",
        "proto/podresources/v1/api.proto",
    ];
    let descriptors = match protox::compile(protos, ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(e) => panic!("parsing the vendored protos in crates/kubelet/proto: {e:?}"),
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(descriptors) {
        panic!("generating the CSI, plugin registration and containerd events gRPC code: {e}");
    }
}
