//! The running phase (upstream's SyncPod): the pod synced to its spec. Containers whose
//! liveness or startup probe failed are killed; the plan decides what to kill, create and start
//! (with the restart backoff); containers start once the pod's volumes are set up.

use super::{Outcome, VOLUME_WAIT, Worker};
use crate::pod::error::{Error, Result};
use crate::pod::executor;
use crate::pod::observe::PodObs;
use crate::pod::plan;
use std::time::Duration;

impl Worker {
    /// Syncs a pod that is neither deleted nor terminal, from its observed state.
    pub(super) async fn sync_running(&mut self, obs: PodObs) -> Result<Outcome> {
        let deps = self.cfg.deps.clone();
        // The volume manager keeps the pod's volumes (downward API files follow its metadata).
        deps.volumes.set_pod(&self.pod);

        let mut obs = self.kill_unhealthy(obs).await?;
        // An allocated resize is applied to the running containers first (in place, or by a
        // restart the plan below carries out).
        let resize = self.resize(&obs).await;

        let now = deps.clock.now();
        self.backoff.gc(now);
        // A sidecar lets the next init container start once its startup probe passed.
        let views = self.probes.views();
        let started = |id: &str| views.get(id).is_some_and(|v| v.started);
        let mut p = plan::plan_probed(&self.pod, &obs, &self.backoff, now, &started);
        self.add_resize_restarts(&mut p, &resize, &obs);
        self.take_waiting(&p);
        if p.is_noop() {
            self.publish(&obs);
            return Ok(Outcome::Next(p.retry_at));
        }
        // Containers start only once the pod's volumes are set up (upstream WaitForAttachAndMount);
        // until then they wait in ContainerCreating with the volumes' errors as the message.
        let starts = p.start.iter().chain(&p.start_ephemeral);
        let volumes = if p.create_sandbox.is_some() || starts.clone().next().is_some() {
            let ready = self.token.run_until_cancelled(deps.volumes.wait_ready(&self.pod, VOLUME_WAIT)).await;
            match ready.ok_or(Error::StoppingBefore("nothing started"))? {
                Ok(v) => v,
                Err(nr) => {
                    tracing::warn!(pod = %executor::pod_name(&self.pod), "{}", nr.message);
                    for s in starts {
                        self.waiting.insert(s.name.clone(), ("ContainerCreating".into(), nr.message.clone()));
                    }
                    self.publish(&obs);
                    let now = deps.clock.now();
                    let (soonest, latest) = (now + Duration::from_secs(1), now + Duration::from_secs(30));
                    let retry = nr.retry_at.unwrap_or(now).clamp(soonest, latest);
                    return Ok(Outcome::Next(Some(retry)));
                }
            }
        } else {
            crate::volume::PodVolumes::default()
        };
        // While a pull waits for a slot, the pod's status message says where it stands.
        let statuses = self.cfg.statuses.clone();
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let on_queued = move |msg: String| statuses.set_message(&uid, msg);
        let result = executor::execute(
            &deps,
            &self.pod,
            &obs,
            &p,
            &mut self.backoff,
            &mut self.waiting,
            &on_queued,
            &volumes,
            &self.token,
        )
        .await;
        self.record_started(&p);
        obs = match &result {
            Ok(done) if done.known => {
                self.record_own(done);
                self.observe().await?
            }
            _ => self.observe_after_change().await?,
        };
        self.publish(&obs);
        result?;
        // Containers that failed to start are retried soon; image pulls back off on their own.
        let retry = (!self.waiting.is_empty()).then(|| deps.clock.now() + Duration::from_secs(2));
        // A sidecar just started lets the next container start: sync again at once (upstream's
        // PLEG reports the start; here the worker recorded it itself, and a sidecar without a
        // startup probe sends no probe result either).
        let retry = match self.started_sidecar(&p) {
            true => Some(deps.clock.now()),
            false => retry,
        };
        let next = match (p.retry_at, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Outcome::Next(next))
    }

    /// Whether the plan started a sidecar that is now running (not waiting on a failure).
    fn started_sidecar(&self, p: &plan::Plan) -> bool {
        let sidecars = self.pod.spec.as_ref().and_then(|s| s.init_containers.as_ref());
        p.start
            .iter()
            .filter(|s| s.init && !self.waiting.contains_key(&s.name))
            .any(|s| sidecars.is_some_and(|i| i.iter().any(|c| c.name == s.name && crate::meta::is_sidecar(c))))
    }

    /// Containers whose liveness or startup probe failed are killed; the plan then restarts
    /// them by their restart policy, with the usual backoff. Returns the pod's state after.
    async fn kill_unhealthy(&mut self, obs: PodObs) -> Result<PodObs> {
        let unhealthy = self.probes.unhealthy();
        if unhealthy.is_empty() {
            return Ok(obs);
        }
        let deps = self.cfg.deps.clone();
        let ip = obs.sandbox().and_then(|s| s.ip.clone());
        for (id, reason) in unhealthy {
            self.probes.forget(&id);
            let Some(c) = obs.containers.iter().find(|c| c.id == id) else { continue };
            let grace = self.probe_grace(&c.name).unwrap_or_else(|| executor::grace_secs(&self.pod));
            tracing::info!(pod = %executor::pod_name(&self.pod), container = %c.name, "{reason}");
            let stopped = executor::stop_container(&deps, &self.pod, c, grace, ip.as_deref()).await;
            self.changed_runtime();
            stopped?;
        }
        self.observe_after_change().await
    }

    /// Reasons from the plan (back-off) replace those of containers it decided about; a
    /// CrashLoopBackOff of a container the plan no longer waits on or starts is dropped.
    fn take_waiting(&mut self, p: &plan::Plan) {
        let deps = &self.cfg.deps;
        for w in &p.waiting {
            let before = self.waiting.insert(w.name.clone(), (w.reason.clone(), w.message.clone()));
            if before.as_ref().map(|b| &b.1) != Some(&w.message) {
                let m = &self.pod.metadata;
                let msg = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    w.name,
                    m.name.as_deref().unwrap_or(""),
                    m.namespace.as_deref().unwrap_or(""),
                    m.uid.as_deref().unwrap_or("")
                );
                deps.events.pod(&self.pod, Some(&w.name), crate::event_recorder::Type::Warning, "BackOff", msg);
            }
        }
        let planned: Vec<&str> =
            p.waiting.iter().map(|w| w.name.as_str()).chain(p.start.iter().map(|s| s.name.as_str())).collect();
        self.waiting.retain(|name, (reason, _)| reason != "CrashLoopBackOff" || planned.contains(&name.as_str()));
    }

    /// A probe-level terminationGracePeriodSeconds for a container's (or sidecar's)
    /// liveness/startup kill.
    fn probe_grace(&self, name: &str) -> Option<i64> {
        let spec = self.pod.spec.as_ref()?;
        let sidecars = spec.init_containers.iter().flatten().filter(|c| crate::meta::is_sidecar(c));
        let c = spec.containers.iter().chain(sidecars).find(|c| c.name == name)?;
        [&c.liveness_probe, &c.startup_probe].into_iter().flatten().find_map(|p| p.termination_grace_period_seconds)
    }
}
