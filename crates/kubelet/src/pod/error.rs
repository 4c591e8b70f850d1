//! What can go wrong syncing a pod. A failed sync is retried by its worker; these are its causes,
//! the CRI, cgroup and io errors kept as sources. The texts are the pod's: the volume teardown's
//! goes into the pod's status message as it is.

use crate::cri::CriError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRI call failed (`"<op>: <message>"`).
    #[error(transparent)]
    Runtime(#[from] CriError),
    #[error("failed to create pod sandbox: {0}")]
    CreateSandbox(#[source] CriError),
    /// The RuntimeClass could not be resolved (upstream's LookupRuntimeHandler error).
    #[error("failed to create pod sandbox: {0}")]
    RuntimeHandler(#[source] crate::runtime_class::Error),
    /// `hostUsers: false` and the runtime handler cannot give the pod a user namespace.
    #[error("failed to create pod sandbox: {0}")]
    UserNamespace(#[source] super::userns::Error),
    #[error("pod log directory {path}: {source}")]
    LogDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create pod cgroup: {0}")]
    PodCgroup(#[source] crate::cm::Error),
    /// The pod's volumes are not torn down yet (the volume manager's reason).
    #[error("waiting for volumes to be torn down: {0}")]
    VolumeTeardown(#[source] crate::volume::Error),
    #[error("removing the pod directory: {0}")]
    RemovePodDir(#[source] crate::volume::mount::Error),
    /// The kubelet is stopping: the sync ends at a clean point.
    #[error("the kubelet is stopping")]
    Stopping,
    /// The kubelet is stopping, and what was therefore not done.
    #[error("the kubelet is stopping: {0}")]
    StoppingBefore(&'static str),
    /// Several calls failed (a pod's containers and sandboxes are stopped or removed together).
    #[error("{}", join(.0))]
    Several(Vec<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join(errors: &[Error]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// The FailedCreatePodSandBox event's message for a sandbox that could not be made
    /// (SyncPod's "Failed to create pod sandbox: <err>").
    pub fn sandbox_event(&self) -> Option<String> {
        let cause = match self {
            Error::CreateSandbox(e) => e.to_string(),
            Error::RuntimeHandler(e) => e.to_string(),
            Error::UserNamespace(e) => e.to_string(),
            _ => return None,
        };
        Some(format!("Failed to create pod sandbox: {cause}"))
    }

    /// Ok when nothing failed, the one error, or all of them.
    pub fn all(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_runtime_cause_and_join_several() {
        let cri = || CriError::new("StopContainer", tonic::Code::Unavailable, "connection refused");
        assert_eq!(Error::from(cri()).to_string(), "StopContainer: connection refused");
        let e = Error::CreateSandbox(cri());
        assert_eq!(e.to_string(), "failed to create pod sandbox: StopContainer: connection refused");
        assert!(std::error::Error::source(&e).is_some());
        assert!(Error::all(vec![]).is_ok());
        let one = Error::all(vec![Error::Stopping]).unwrap_err();
        assert_eq!(one.to_string(), "the kubelet is stopping");
        let two = Error::all(vec![cri().into(), Error::StoppingBefore("nothing started")]).unwrap_err();
        assert_eq!(two.to_string(), "StopContainer: connection refused; the kubelet is stopping: nothing started");
        let teardown = Error::VolumeTeardown(crate::volume::Error::TearDown(vec!["volume \"data\" is busy".into()]));
        assert_eq!(teardown.to_string(), "waiting for volumes to be torn down: volume \"data\" is busy");
    }
}
