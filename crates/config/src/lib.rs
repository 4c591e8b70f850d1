//! KubeletConfiguration (kubelet.config.k8s.io/v1beta1): types with the upstream field names
//! and defaults, YAML/JSON decoding, command-line flags, validation, and a report of fields
//! the kubelet does not act on yet.
//!
//! Typical start-up: `let parsed = Flags::parse_env(); let (cfg, node) = load_with_flags(&parsed.flags)?;`
//! then `unsupported_fields(&cfg, IMPLEMENTED)` to log what is ignored.

// No unwrap/expect on anything that comes from outside the process: bad input is an error that
// names the object and field (tests may unwrap; see clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod checks;
pub mod decode;
pub mod defaults;
pub mod duration;
pub mod eviction;
pub mod features;
pub mod flags;
pub mod quantity;
mod scalar;
pub mod sections;
pub mod support;
pub mod types;
pub mod validate;

use std::path::{Path, PathBuf};

pub use decode::DecodeError;
pub use duration::{Duration, DurationError};
pub use flags::{Flags, FlagsError, NodeOptions, Parsed};
pub use quantity::{Quantity, QuantityError};
pub use sections::*;
pub use support::unsupported_fields;
pub use types::{API_VERSION, KIND, KubeletConfiguration};
pub use validate::{FieldError, ValidationErrors};

/// Errors from loading a configuration file. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read kubelet config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decode kubelet config file {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    /// The configuration (file plus flags) failed validation; `path` is `None` without --config.
    #[error("{}{source}", path.as_ref().map(|p| format!("kubelet config file {}: ", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        #[source]
        source: ValidationErrors,
    },
}

/// Reads and decodes a configuration file (YAML or JSON) with upstream defaults applied.
/// Does not validate: apply flags first, then call `validate`.
pub fn load(path: &Path) -> Result<KubeletConfiguration, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    KubeletConfiguration::from_text(&text).map_err(|source| LoadError::Decode { path: path.to_path_buf(), source })
}

/// The whole start-up sequence: load `--config` (or take the defaults), apply the flags over
/// it, validate the result.
pub fn load_with_flags(flags: &Flags) -> Result<(KubeletConfiguration, NodeOptions), LoadError> {
    let mut cfg = match &flags.config {
        Some(path) => load(path)?,
        None => KubeletConfiguration::default(),
    };
    let node = flags.apply(&mut cfg);
    cfg.validate().map_err(|source| LoadError::Invalid { path: flags.config.clone(), source })?;
    Ok((cfg, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubelet-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_errors_name_the_file() {
        let missing = Path::new("/nonexistent/kubelet/config.yaml");
        let err = load(missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/kubelet/config.yaml"), "{err}");

        let path =
            temp_file("bad.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nbogus: 1\n");
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.yaml") && err.contains("unknown field \"bogus\""), "{err}");
    }

    #[test]
    fn load_with_flags_validates_file_plus_flags() {
        let path = temp_file(
            "ok.yaml",
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 20\n",
        );
        let flags = Flags { config: Some(path.clone()), max_pods: Some(-1), ..Default::default() };
        let err = load_with_flags(&flags).unwrap_err();
        assert!(matches!(&err, LoadError::Invalid { source, .. } if source.has("maxPods")));
        assert!(err.to_string().contains("ok.yaml"), "{err}");

        let flags = Flags { config: Some(path), max_pods: Some(30), ..Default::default() };
        let (cfg, node) = load_with_flags(&flags).unwrap();
        assert_eq!(cfg.max_pods, 30);
        assert_eq!(node.root_dir, PathBuf::from("/var/lib/kubelet"));
    }

    #[test]
    fn no_config_flag_means_defaults() {
        let (cfg, _) = load_with_flags(&Flags::default()).unwrap();
        assert_eq!(cfg, KubeletConfiguration::default());
    }
}
