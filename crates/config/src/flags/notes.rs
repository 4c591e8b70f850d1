//! What the flags given say beyond their values: upstream's deprecation warnings (pflag's
//! `Flag --x has been deprecated, <why>`), the flags this kubelet accepts but does not act on,
//! and the cAdvisor flags upstream registers by accident and keeps, deprecated.

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Flags;

/// A parsed command line and the long names of the flags given on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub flags: Flags,
    pub given: Vec<String>,
}

/// Why upstream marks a flag deprecated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagNote {
    pub flag: &'static str,
    pub message: &'static str,
}

/// AddKubeletConfigFlags marks every KubeletConfiguration flag deprecated with this message.
const SET_IN_CONFIG_FILE: &str = "This parameter should be set via the config file specified by the Kubelet's \
     --config flag. See https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/ for more information.";
/// The KubeletConfiguration flags upstream leaves undeprecated.
const CONFIG_FLAGS_NOT_DEPRECATED: &[&str] = &["v", "vmodule", "log-flush-frequency", "provider-id"];
/// The help heading every KubeletConfiguration flag (except the ones above) carries here.
const CONFIG_HEADING_PREFIX: &str = "Deprecated: set in the --config file";

const EVICTION_INSTEAD: &str = "Use --eviction-hard or --eviction-soft instead. Will be removed in a future version.";
const FUTURE: &str = "will be removed in a future version";
const CADVISOR: &str = "This is a cadvisor flag that was mistakenly registered with the Kubelet. Due to legacy \
     concerns, it will follow the standard CLI deprecation timeline before being removed.";

/// Deprecated flag-only flags (KubeletFlags.AddFlags, ContainerRuntimeOptions) and their reasons.
const DEPRECATED_FLAGS: &[FlagNote] = &[
    FlagNote {
        flag: "pod-infra-container-image",
        message: "will be removed in 1.35. Image garbage collector will get sandbox image information from CRI.",
    },
    FlagNote { flag: "minimum-container-ttl-duration", message: EVICTION_INSTEAD },
    FlagNote { flag: "maximum-dead-containers-per-container", message: EVICTION_INSTEAD },
    FlagNote { flag: "maximum-dead-containers", message: EVICTION_INSTEAD },
    FlagNote { flag: "register-schedulable", message: FUTURE },
    FlagNote { flag: "keep-terminated-pod-volumes", message: FUTURE },
    FlagNote { flag: "experimental-mounter-path", message: "will be removed in 1.25 or later. in favor of using CSI." },
    FlagNote {
        flag: "cloud-config",
        message: "will be removed in 1.25 or later, in favor of removing cloud provider code from Kubelet.",
    },
    FlagNote { flag: "experimental-allocatable-ignore-eviction", message: "will be removed in 1.25 or later." },
];

/// Flag-only flags this kubelet accepts and does not act on (the KubeletConfiguration flags
/// land in fields, which `support::unsupported_fields` reports).
const NOT_ACTED_ON: &[&str] = &[
    "config-dir",
    "runtime-cgroups",
    "minimum-container-ttl-duration",
    "maximum-dead-containers-per-container",
    "maximum-dead-containers",
    "register-schedulable",
    "keep-terminated-pod-volumes",
    "experimental-mounter-path",
    "cloud-config",
    "experimental-allocatable-ignore-eviction",
    "housekeeping-interval",
    "docker-root",
];

/// cAdvisor flags upstream registers (globalflags_linux.go): two plain ones, the rest deprecated.
/// (name, takes a value)
const CADVISOR_FLAGS: &[(&str, bool)] = &[
    ("docker-root", true),
    ("housekeeping-interval", true),
    ("application-metrics-count-limit", true),
    ("boot-id-file", true),
    ("container-hints", true),
    ("containerd", true),
    ("docker", true),
    ("docker-env-metadata-whitelist", true),
    ("docker-only", false),
    ("docker-tls", false),
    ("docker-tls-ca", true),
    ("docker-tls-cert", true),
    ("docker-tls-key", true),
    ("enable-load-reader", false),
    ("event-storage-age-limit", true),
    ("event-storage-event-limit", true),
    ("global-housekeeping-interval", true),
    ("log-cadvisor-usage", false),
    ("machine-id-file", true),
    ("storage-driver-user", true),
    ("storage-driver-password", true),
    ("storage-driver-host", true),
    ("storage-driver-db", true),
    ("storage-driver-table", true),
    ("storage-driver-secure", false),
    ("storage-driver-buffer-duration", true),
    ("containerd-namespace", true),
];

/// The cAdvisor flags as clap arguments: accepted, ignored, listed under their own heading.
pub(super) fn cadvisor_args() -> Vec<Arg> {
    CADVISOR_FLAGS
        .iter()
        .map(|&(name, takes_value)| {
            let arg = Arg::new(name).long(name).help_heading("cAdvisor (ignored)").action(ArgAction::Set);
            if takes_value { arg } else { arg.num_args(0..=1).require_equals(true).default_missing_value("true") }
        })
        .collect()
}

/// The long names of the arguments given on the command line, in the command's order.
pub(super) fn given(command: &Command, matches: &ArgMatches) -> Vec<String> {
    command
        .get_arguments()
        .filter(|arg| matches!(matches.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine)))
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

/// Upstream's deprecation message of a flag, if it has one.
pub fn deprecation(flag: &str) -> Option<&'static str> {
    if let Some(note) = DEPRECATED_FLAGS.iter().find(|n| n.flag == flag) {
        return Some(note.message);
    }
    if CADVISOR_FLAGS.iter().any(|(name, _)| *name == flag) {
        return (flag != "docker-root" && flag != "housekeeping-interval").then_some(CADVISOR);
    }
    if CONFIG_FLAGS_NOT_DEPRECATED.contains(&flag) {
        return None;
    }
    let command = Flags::full_command();
    let arg = command.get_arguments().find(|a| a.get_long() == Some(flag))?;
    arg.get_help_heading().is_some_and(|h| h.starts_with(CONFIG_HEADING_PREFIX)).then_some(SET_IN_CONFIG_FILE)
}

impl Parsed {
    /// pflag's warning for each deprecated flag given: `Flag --x has been deprecated, <why>`.
    pub fn deprecation_warnings(&self) -> Vec<String> {
        self.given
            .iter()
            .filter_map(|flag| deprecation(flag).map(|why| format!("Flag --{flag} has been deprecated, {why}")))
            .collect()
    }

    /// The flag-only flags given that this kubelet does not act on (cAdvisor's included).
    pub fn not_acted_on(&self) -> Vec<&str> {
        self.given
            .iter()
            .map(String::as_str)
            .filter(|f| NOT_ACTED_ON.contains(f) || CADVISOR_FLAGS.iter().any(|(name, _)| name == f))
            .collect()
    }
}
