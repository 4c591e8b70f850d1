//! Volumes: the volume manager (desired state, actual state, reconciler) and the volume plugins.

pub mod csi;
