//! CSI volumes (pkg/volume/csi): PVC → PV → CSI driver, NodeStage/NodePublish on set-up and
//! NodeUnpublish/NodeUnstage on tear-down, drivers registered through `<root-dir>/plugins_registry`.

pub mod proto;
