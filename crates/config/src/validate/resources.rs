//! Validation of node allocatable enforcement, reserved resources and eviction thresholds.

use std::collections::{BTreeMap, BTreeSet};

use super::{Errors, q, quoted};
use crate::checks;
use crate::eviction;
use crate::types::KubeletConfiguration;

impl KubeletConfiguration {
    pub(super) fn check_allocatable(&self, e: &mut Errors) {
        let keys = &self.enforce_node_allocatable;
        let has = |k: &str| keys.iter().any(|v| v == k);
        for (plain, compressible) in
            [("system-reserved", "system-reserved-compressible"), ("kube-reserved", "kube-reserved-compressible")]
        {
            if has(plain) && has(compressible) {
                e.add(
                    "enforceNodeAllocatable",
                    format!("{keys:?}"),
                    format!("{plain:?} and {compressible:?} cannot be used together"),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, key) in keys.iter().enumerate() {
            let field = format!("enforceNodeAllocatable[{i}]");
            if !seen.insert(key) {
                e.add(&field, q(key), "duplicate enforcement");
                continue;
            }
            match key.as_str() {
                "pods" => {}
                "system-reserved" | "system-reserved-compressible" if self.system_reserved_cgroup.is_empty() => {
                    e.add(&field, q(key), "requires systemReservedCgroup to be set");
                }
                "kube-reserved" | "kube-reserved-compressible" if self.kube_reserved_cgroup.is_empty() => {
                    e.add(&field, q(key), "requires kubeReservedCgroup to be set");
                }
                "system-reserved" | "system-reserved-compressible" | "kube-reserved" | "kube-reserved-compressible" => {
                }
                "none" => {
                    if keys.len() > 1 {
                        e.add(&field, q(key), "cannot be combined with other enforcements");
                    }
                    continue;
                }
                _ => {
                    e.add(
                        &field,
                        q(key),
                        format!(
                            "must be one of {}",
                            quoted(&[
                                "pods",
                                "system-reserved",
                                "system-reserved-compressible",
                                "kube-reserved",
                                "kube-reserved-compressible",
                                "none",
                            ])
                        ),
                    );
                    continue;
                }
            }
            if !self.cgroups_per_qos {
                e.add(&field, q(key), "requires cgroupsPerQOS to be true");
            }
        }
        for (name, map) in [("systemReserved", &self.system_reserved), ("kubeReserved", &self.kube_reserved)] {
            for (resource, amount) in map {
                let field = format!("{name}[{resource}]");
                if !["cpu", "memory", "ephemeral-storage", "pid"].contains(&resource.as_str()) {
                    e.add(&field, q(amount.as_str()), format!("cannot reserve {resource:?}"));
                } else if amount.is_negative() {
                    e.add(&field, q(amount.as_str()), "must not be negative");
                }
            }
        }
        if !self.reserved_system_cpus.is_empty() {
            if !self.system_reserved_cgroup.is_empty() || !self.kube_reserved_cgroup.is_empty() {
                e.add(
                    "reservedSystemCPUs",
                    q(&self.reserved_system_cpus),
                    "cannot be used with systemReservedCgroup or kubeReservedCgroup",
                );
            }
            if let Err(why) = checks::parse_cpuset(&self.reserved_system_cpus) {
                e.add("reservedSystemCPUs", q(&self.reserved_system_cpus), why);
            }
        }
    }

    pub(super) fn check_eviction(&self, e: &mut Errors) {
        let thresholds = |e: &mut Errors, name: &str, map: &BTreeMap<String, String>| {
            for (signal, value) in map {
                if let Err(why) = eviction::parse_threshold(signal, value) {
                    e.add(format!("{name}[{signal}]"), q(value), why.to_string());
                }
            }
        };
        thresholds(e, "evictionHard", &self.eviction_hard);
        thresholds(e, "evictionSoft", &self.eviction_soft);
        for (signal, value) in &self.eviction_soft_grace_period {
            if let Err(why) = eviction::parse_grace_period(signal, value) {
                e.add(format!("evictionSoftGracePeriod[{signal}]"), q(value), why.to_string());
            }
        }
        for (signal, value) in &self.eviction_soft {
            if !self.eviction_soft_grace_period.contains_key(signal) {
                e.add(
                    format!("evictionSoft[{signal}]"),
                    q(value),
                    "requires a grace period in evictionSoftGracePeriod",
                );
            }
        }
        for (signal, value) in &self.eviction_minimum_reclaim {
            if let Err(why) = eviction::parse_minimum_reclaim(signal, value) {
                e.add(format!("evictionMinimumReclaim[{signal}]"), q(value), why.to_string());
            }
        }
        e.non_negative("evictionMaxPodGracePeriod", self.eviction_max_pod_grace_period.into());
    }
}

#[cfg(test)]
mod tests {
    use crate::types::KubeletConfiguration;

    #[test]
    fn eviction_thresholds_are_checked() {
        let mut cfg = KubeletConfiguration::default();
        cfg.eviction_hard.insert("memory.free".into(), "1Gi".into());
        cfg.eviction_hard.insert("nodefs.available".into(), "110%".into());
        cfg.eviction_soft.insert("memory.available".into(), "1Gi".into());
        cfg.eviction_minimum_reclaim.insert("imagefs.available".into(), "-1Gi".into());
        let err = cfg.validate().unwrap_err();
        assert!(err.has("evictionHard[memory.free]"));
        assert!(err.has("evictionHard[nodefs.available]"));
        assert!(err.has("evictionSoft[memory.available]"), "{err}");
        assert!(err.has("evictionMinimumReclaim[imagefs.available]"));
    }

    #[test]
    fn allocatable_enforcement_needs_cgroups() {
        let cfg = KubeletConfiguration {
            enforce_node_allocatable: vec!["pods".into(), "system-reserved".into(), "bogus".into()],
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.has("enforceNodeAllocatable[1]"));
        assert!(err.has("enforceNodeAllocatable[2]"));
        assert!(!err.has("enforceNodeAllocatable[0]"));
    }
}
