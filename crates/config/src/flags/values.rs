//! Flag value syntaxes, as upstream's pflag values parse them (k8s.io/component-base/cli/flag,
//! pkg/util/flag): Go booleans, `k=v` maps (split on commas or not), `k<v` eviction maps,
//! `k:v` multimaps, `key=value:Effect` taints, NUMA memory reservations, vmodule lists.
//! Each parser takes one occurrence of the flag; repeated occurrences are merged by `apply`.

use std::collections::BTreeMap;

use crate::quantity::Quantity;
use crate::sections::{MemoryReservation, Taint, VModuleItem};

/// Errors in one flag value, worded as upstream's flag values word them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("malformed pair, expect string{0}string")]
    MalformedPair(char),
    #[error("malformed pair, expect string=bool")]
    MalformedBoolPair,
    #[error("invalid value of {key}: {value}, err: strconv.ParseBool: parsing {value:?}: invalid syntax")]
    NotBool { key: String, value: String },
    #[error("strconv.ParseBool: parsing {0:?}: invalid syntax")]
    Bool(String),
    #[error("{0:?} is not a valid IP address")]
    NotIp(String),
    #[error("{key}: {source}")]
    Quantity {
        key: String,
        #[source]
        source: crate::quantity::QuantityError,
    },
    #[error("invalid taint spec: {spec}, {reason}")]
    Taint { spec: String, reason: &'static str },
    #[error("invalid reserved memory {0:?}: expect <numa-node>:<resource>=<quantity>[,<resource>=<quantity>]")]
    ReservedMemory(String),
    #[error("invalid vmodule entry {0:?}: expect pattern=N")]
    VModule(String),
}

/// Go's strconv.ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
pub fn go_bool(text: &str) -> Result<bool, ValueError> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ValueError::Bool(text.to_string())),
    }
}

/// An IP address (utilflag.IPVar); surrounding spaces are ignored.
pub fn ip(text: &str) -> Result<String, ValueError> {
    let trimmed = text.trim();
    trimmed.parse::<std::net::IpAddr>().map(|_| trimmed.to_string()).map_err(|_| ValueError::NotIp(text.to_string()))
}

/// One occurrence of a map flag: the pairs in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

impl Pairs {
    /// Merges every occurrence into one map: the first occurrence replaces the file's map, the
    /// later ones add to it (upstream's map values start over on their first Set).
    pub fn merge(occurrences: &[Pairs]) -> BTreeMap<String, String> {
        occurrences.iter().flat_map(|p| p.0.iter().cloned()).collect()
    }
}

fn split_pairs(text: &str, sep: char) -> Result<Pairs, ValueError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once(sep).ok_or(ValueError::MalformedPair(sep))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Result<_, _>>()
        .map(Pairs)
}

/// `k=v,k2=v2` (cliflag.MapStringString).
pub fn map(text: &str) -> Result<Pairs, ValueError> {
    split_pairs(text, '=')
}

/// One `k=v` whose value may hold commas (cliflag.MapStringString with NoSplit).
pub fn map_no_split(text: &str) -> Result<Pairs, ValueError> {
    let (k, v) = text.split_once('=').ok_or(ValueError::MalformedPair('='))?;
    Ok(Pairs(vec![(k.trim().to_string(), v.trim().to_string())]))
}

/// `memory.available<100Mi,nodefs.available<10%` (cliflag.LangleSeparatedMapStringString).
pub fn langle_map(text: &str) -> Result<Pairs, ValueError> {
    split_pairs(text, '<')
}

/// `a:hello,b:again` (cliflag.ColonSeparatedMultimapStringString); a key may repeat.
pub fn colon_multimap(text: &str) -> Result<Pairs, ValueError> {
    split_pairs(text, ':')
}

/// One occurrence of a resource list flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources(pub Vec<(String, Quantity)>);

/// `cpu=200m,memory=500Mi`: a resource list (systemReserved, kubeReserved).
pub fn resources(text: &str) -> Result<Resources, ValueError> {
    quantities(text).map(Resources)
}

fn quantities(text: &str) -> Result<Vec<(String, Quantity)>, ValueError> {
    map(text)?
        .0
        .into_iter()
        .map(|(key, value)| {
            Quantity::parse(&value).map(|q| (key.clone(), q)).map_err(|source| ValueError::Quantity { key, source })
        })
        .collect()
}

/// One occurrence of `--feature-gates`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates(pub Vec<(String, bool)>);

/// `A=true,B=false` (cliflag.MapStringBool, Go booleans).
pub fn feature_gates(text: &str) -> Result<Gates, ValueError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').ok_or(ValueError::MalformedBoolPair)?;
            let (key, value) = (k.trim().to_string(), v.trim().to_string());
            let on = go_bool(&value).map_err(|_| ValueError::NotBool { key: key.clone(), value })?;
            Ok((key, on))
        })
        .collect::<Result<_, _>>()
        .map(Gates)
}

/// The taints of one `--register-with-taints` (the last occurrence wins, as upstream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Taints(pub Vec<Taint>);

/// `key=value:Effect,key2:Effect` (utilflag.RegisterWithTaintsVar over taints.ParseTaints):
/// an empty value means no taints. Key, value and effect are checked by `validate()`.
pub fn taints(text: &str) -> Result<Taints, ValueError> {
    if text.is_empty() {
        return Ok(Taints::default());
    }
    let mut out: Vec<Taint> = Vec::new();
    for spec in text.split(',') {
        let bad = |reason| ValueError::Taint { spec: spec.to_string(), reason };
        if spec.ends_with('-') {
            return Err(bad("removing a taint is not allowed here"));
        }
        let (key_value, effect) = spec.split_once(':').ok_or_else(|| bad("must be key[=value]:effect"))?;
        let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
        if key.is_empty() || effect.is_empty() || effect.contains(':') {
            return Err(bad("must be key[=value]:effect"));
        }
        if out.iter().any(|t| t.key == key && t.effect == effect) {
            return Err(bad("duplicated taints with the same key and effect"));
        }
        out.push(Taint { key: key.into(), value: value.into(), effect: effect.into(), time_added: None });
    }
    Ok(Taints(out))
}

/// The NUMA reservations of one `--reserved-memory`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations(pub Vec<MemoryReservation>);

impl Reservations {
    /// Every occurrence's reservations; a NUMA node named twice adds to its limits.
    pub fn merge(occurrences: &[Reservations]) -> Vec<MemoryReservation> {
        let mut out: Vec<MemoryReservation> = Vec::new();
        for r in occurrences.iter().flat_map(|o| o.0.iter()) {
            match out.iter_mut().find(|o| o.numa_node == r.numa_node) {
                Some(o) => o.limits.extend(r.limits.clone()),
                None => out.push(r.clone()),
            }
        }
        out
    }
}

/// `0:memory=1Gi,hugepages-1M=2Gi` (utilflag.ReservedMemoryVar); `;`-separated groups add NUMA
/// nodes.
pub fn reserved_memory(text: &str) -> Result<Reservations, ValueError> {
    let mut out: Vec<MemoryReservation> = Vec::new();
    for group in text.split(';').map(str::trim).filter(|g| !g.is_empty()) {
        let bad = || ValueError::ReservedMemory(group.to_string());
        let (node, limits) = group.split_once(':').ok_or_else(bad)?;
        let numa_node: i32 = node.trim().parse().map_err(|_| bad())?;
        let limits = quantities(limits)?;
        if limits.is_empty() {
            return Err(bad());
        }
        match out.iter_mut().find(|r| r.numa_node == numa_node) {
            Some(r) => r.limits.extend(limits),
            None => out.push(MemoryReservation { numa_node, limits: limits.into_iter().collect() }),
        }
    }
    Ok(Reservations(out))
}

/// The entries of one `--vmodule`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VModule(pub Vec<VModuleItem>);

/// `pattern=N,other=M` (klog's --vmodule).
pub fn vmodule(text: &str) -> Result<VModule, ValueError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let bad = || ValueError::VModule(part.to_string());
            let (pattern, level) = part.split_once('=').ok_or_else(bad)?;
            let verbosity = level.trim().parse().map_err(|_| bad())?;
            Ok(VModuleItem { file_pattern: pattern.trim().to_string(), verbosity })
        })
        .collect::<Result<_, _>>()
        .map(VModule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(go_bool(f), Ok(false), "{f}");
        }
        assert!(go_bool("yes").is_err());
        assert!(go_bool("").is_err());
    }

    #[test]
    fn maps_split_on_commas_and_trim() {
        let p = map(" cpu = 200m , memory=500Mi,,").unwrap();
        assert_eq!(p.0, vec![("cpu".into(), "200m".into()), ("memory".into(), "500Mi".into())]);
        assert_eq!(map("novalue"), Err(ValueError::MalformedPair('=')));
        let p = map_no_split("full-pcpus-only=true,x").unwrap();
        assert_eq!(p.0, vec![("full-pcpus-only".into(), "true,x".into())]);
        let p = langle_map("memory.available<100Mi,nodefs.available<10%").unwrap();
        assert_eq!(p.0[1], ("nodefs.available".into(), "10%".into()));
        assert!(langle_map("memory.available=100Mi").is_err());
        let p = colon_multimap("a:hello,b:again,a:x").unwrap();
        assert_eq!(p.0.len(), 3);
        assert_eq!(
            Pairs::merge(&[map("a=1,b=2").unwrap(), map("b=3").unwrap()]),
            [("a".into(), "1".into()), ("b".into(), "3".into())].into()
        );
    }

    #[test]
    fn feature_gates_take_go_booleans() {
        assert_eq!(feature_gates("A=true, B=F,").unwrap().0, vec![("A".into(), true), ("B".into(), false)]);
        let err = feature_gates("A=maybe").unwrap_err().to_string();
        assert!(err.starts_with("invalid value of A: maybe"), "{err}");
        assert_eq!(feature_gates("A"), Err(ValueError::MalformedBoolPair));
    }

    #[test]
    fn taint_specs() {
        let t = taints("dedicated=gpu:NoSchedule,node-role.kubernetes.io/control-plane:NoSchedule").unwrap().0;
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value, "gpu");
        assert_eq!(t[1].value, "");
        assert_eq!(t[1].effect, "NoSchedule");
        assert!(taints("").unwrap().0.is_empty());
        assert!(taints("a=b").is_err());
        assert!(taints("a:NoSchedule-").is_err());
        assert!(taints("a=1:NoSchedule,a=2:NoSchedule").unwrap_err().to_string().contains("duplicated"));
    }

    #[test]
    fn reserved_memory_groups() {
        let r = reserved_memory("0:memory=1Gi,hugepages-1M=2Gi;1:memory=2Gi").unwrap().0;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].limits.len(), 2);
        assert_eq!(r[1].numa_node, 1);
        assert!(reserved_memory("memory=1Gi").is_err());
        assert!(reserved_memory("0:memory=lots").is_err());
    }

    #[test]
    fn vmodule_and_ip() {
        let v = vmodule("pod*=4, cri=2").unwrap().0;
        assert_eq!(v[1].file_pattern, "cri");
        assert!(vmodule("pod").is_err());
        assert_eq!(ip(" ::1 ").unwrap(), "::1");
        assert!(ip("localhost").is_err());
    }
}
