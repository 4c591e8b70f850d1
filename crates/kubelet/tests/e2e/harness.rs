//! Runs the real kubelet binary against the real containerd, one test at a time (every test's
//! kubelet owns the whole runtime, as a kubelet does, so they must not overlap).

use k8s_openapi::api::core::v1::Pod;
use kubelet::cri::remote::RemoteRuntime;
use kubelet::cri::{DynRuntime, Runtime};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

pub const SOCKET: &str = "/run/containerd/containerd.sock";
pub const REGISTRY: &str = "127.0.0.1:5000";

/// Async-aware, so a waiting test does not hold a thread; works across the tests' runtimes.
static SERIAL: Mutex<()> = Mutex::const_new(());

pub fn image(name: &str) -> String {
    format!("{REGISTRY}/{name}")
}

/// Connects to containerd, or explains why the e2e suite cannot run. With
/// `KUBELET_E2E_REQUIRED=1` (CI) a missing runtime fails the test instead of skipping it.
pub async fn runtime_or_skip(test: &str) -> Option<DynRuntime> {
    runtime_or_skip_at(test, SOCKET).await
}

/// Whether the e2e prerequisites are required (`KUBELET_E2E_REQUIRED=1`, CI).
pub fn required() -> bool {
    std::env::var("KUBELET_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// As [`runtime_or_skip`], for the containerd at `socket`.
pub async fn runtime_or_skip_at(test: &str, socket: &str) -> Option<DynRuntime> {
    let why = match RemoteRuntime::connect(&format!("unix://{socket}"), None, Duration::from_secs(30)).await {
        Ok(rt) => match rt.version().await {
            Ok(_) => return Some(Arc::new(rt)),
            Err(e) => format!("containerd at {socket} does not answer: {e}"),
        },
        Err(e) => format!("cannot connect to containerd at {socket}: {e}"),
    };
    if required() {
        panic!("{test}: e2e prerequisites missing: {why}");
    }
    eprintln!("SKIPPED {test}: {why} (run hack/env-up.sh first)");
    None
}

/// `N` distinct free ports: every listener is held until all are chosen (released one at a time,
/// the kernel may hand the same port out twice — CI once saw healthz and the read-only port
/// collide).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("free port").port())
}

/// An exclusive lock across processes (two test runs on one machine would otherwise each see
/// the other's pods as orphans and remove them).
/// Holding the file holds the flock; closing it (on drop) releases it.
struct MachineLock(#[allow(dead_code)] std::fs::File);

impl MachineLock {
    async fn take() -> Self {
        let path = std::env::temp_dir().join("kubelet-rs-e2e.lock");
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).expect("e2e lock file");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let mut announced = false;
        // Non-blocking attempts, so the async runtime is never blocked.
        while unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if !announced {
                eprintln!("waiting for another e2e run to release {}", path.display());
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self(file)
    }
}

pub struct Kubelet {
    _serial: MutexGuard<'static, ()>,
    _machine: MachineLock,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub node: String,
    pub ro_port: u16,
    pub healthz_port: u16,
    /// The HTTPS kubelet server's port (on 127.0.0.1).
    pub port: u16,
    pub runtime: DynRuntime,
    http: reqwest::Client,
    starts: u32,
    args: Vec<String>,
    /// Extra environment variables for the kubelet process.
    env: Vec<(String, String)>,
}

impl Kubelet {
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, "").await
    }

    /// Starts a kubelet with `extra` appended to its KubeletConfiguration.
    pub async fn start_with(test: &str, extra: &str) -> Option<Self> {
        Self::start_with_args(test, extra, &[]).await
    }

    /// As [`Kubelet::start_with`], with extra command-line flags.
    pub async fn start_with_args(test: &str, extra: &str, args: &[String]) -> Option<Self> {
        Self::start_on_with_env(test, SOCKET, extra, args, &[]).await
    }

    /// As [`Kubelet::start_with_args`], with extra environment variables for the kubelet.
    pub async fn start_with_env(test: &str, extra: &str, args: &[String], env: &[(&str, &str)]) -> Option<Self> {
        Self::start_on_with_env(test, SOCKET, extra, args, env).await
    }

    /// As [`Kubelet::start_with_args`] on the containerd at `socket` (`extra` must set
    /// `containerRuntimeEndpoint` to it).
    pub async fn start_on(test: &str, socket: &str, extra: &str, args: &[String]) -> Option<Self> {
        Self::start_on_with_env(test, socket, extra, args, &[]).await
    }

    /// As [`Kubelet::start_on`], with extra environment variables for the kubelet.
    pub async fn start_on_with_env(
        test: &str,
        socket: &str,
        extra: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let serial = SERIAL.lock().await;
        let machine = MachineLock::take().await;
        let runtime = runtime_or_skip_at(test, socket).await?;
        let dir = tempfile::Builder::new().prefix(&format!("e2e-{test}-")).tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let node = format!("e2e-{}", test.replace('_', "-")).chars().take(40).collect::<String>();
        let [ro_port, healthz_port, port] = free_ports();
        let mut k = Self {
            _serial: serial,
            _machine: machine,
            child: None,
            dir,
            node,
            ro_port,
            healthz_port,
            port,
            runtime,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            starts: 0,
            args: args.to_vec(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        k.write_config(extra);
        k.spawn();
        k.wait_healthy().await;
        Some(k)
    }

    fn write_config(&self, extra: &str) {
        let mut config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\nreadOnlyPort: {}\nhealthzPort: {}\nhealthzBindAddress: 127.0.0.1\naddress: 127.0.0.1\nport: {}\nfileCheckFrequency: 2s\nclusterDomain: cluster.local\nserializeImagePulls: false\n",
            self.manifests().display(),
            self.ro_port,
            self.healthz_port,
            self.port
        );
        // The default evictionHard (imagefs.available<15%, nodefs.available<10%) would make these
        // tests depend on the build machine's free disk: at 14% free the node reports DiskPressure
        // and the kubelet rejects every non-critical pod (Evicted), as upstream does. Keep the
        // memory default; a test that studies eviction sets its own thresholds.
        if !extra.contains("evictionHard") {
            config.push_str(
                "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: 1%\n  imagefs.available: 1%\n  nodefs.inodesFree: 1%\n",
            );
        }
        // Likewise image GC (high threshold 85 %): above it every test's kubelet would remove the
        // shared test images. 100 turns it off, as upstream; the image GC test sets its own.
        if !extra.contains("imageGCHighThresholdPercent") {
            config.push_str("imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n");
        }
        config.push_str(extra);
        std::fs::write(self.dir.path().join("config.yaml"), config).unwrap();
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kubelet.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kubelet"))
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .arg("--root-dir")
            .arg(self.dir.path().join("root"))
            .arg("--hostname-override")
            .arg(&self.node)
            .arg("--v=4")
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kubelet");
        self.child = Some(child);
    }

    async fn wait_healthy(&self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.healthz_port);
        let ok = wait_until(Duration::from_secs(60), || async {
            self.http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        if ok.is_none() {
            panic!("kubelet did not become healthy; log:\n{}", self.log());
        }
    }

    /// Stops the kubelet with `signal` (libc::SIGTERM or SIGKILL) and starts it again.
    pub async fn restart(&mut self, signal: i32) {
        self.stop(signal);
        self.spawn();
        self.wait_healthy().await;
    }

    fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for the kubelet to exit: how long it took, or None
    /// if it had to be killed.
    pub fn terminate(&mut self) -> Option<Duration> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts the kubelet again after [`Kubelet::terminate`].
    pub async fn start_again(&mut self) {
        self.spawn();
        self.wait_healthy().await;
    }

    /// The running kubelet's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn write_manifest(&self, file: &str, yaml: &str) {
        // Write then rename, so the kubelet never reads half a file.
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    pub async fn pods(&self) -> Vec<Pod> {
        let url = format!("http://127.0.0.1:{}/pods", self.ro_port);
        let Ok(resp) = self.http.get(&url).send().await else { return Vec::new() };
        let Ok(body) = resp.bytes().await else { return Vec::new() };
        let Ok(list) = serde_json::from_slice::<serde_json::Value>(&body) else { return Vec::new() };
        serde_json::from_value(list["items"].clone()).unwrap_or_default()
    }

    /// The pod whose manifest name is `name` (the kubelet adds the node suffix).
    pub async fn pod(&self, name: &str) -> Option<Pod> {
        let full = format!("{name}-{}", self.node);
        self.pods().await.into_iter().find(|p| p.metadata.name.as_deref() == Some(full.as_str()))
    }

    /// The pod named exactly `name` (API pods have no node suffix).
    pub async fn pod_exact(&self, name: &str) -> Option<Pod> {
        self.pods().await.into_iter().find(|p| p.metadata.name.as_deref() == Some(name))
    }

    /// Waits (generously) until `check` returns Some for the pod named `name`.
    pub async fn wait_pod<T>(&self, name: &str, what: &str, timeout: Duration, check: impl Fn(&Pod) -> Option<T>) -> T {
        let got = wait_until(timeout, || async { self.pod(name).await.as_ref().and_then(&check) }).await;
        match got {
            Some(v) => v,
            None => panic!(
                "timed out after {timeout:?} waiting for pod {name}: {what}\nlast seen: {}\nkubelet log (tail):\n{}",
                serde_json::to_string_pretty(&self.pod(name).await).unwrap_or_default(),
                tail(&self.log(), 60)
            ),
        }
    }

    /// Sandboxes in the runtime belonging to pods of this kubelet's node.
    pub async fn our_sandboxes(&self) -> Vec<kubelet::cri::api::PodSandbox> {
        let suffix = format!("-{}", self.node);
        self.runtime
            .list_pod_sandboxes(None)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.metadata.as_ref().is_some_and(|m| m.name.ends_with(&suffix)))
            .collect()
    }

    /// Removes every manifest and waits until the kubelet has removed every pod it ran.
    pub async fn cleanup(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.manifests()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if self.exit_status().is_none() {
            let gone = wait_until(Duration::from_secs(90), || async {
                (self.pods().await.is_empty() && self.our_sandboxes().await.is_empty()).then_some(())
            })
            .await;
            if gone.is_none() {
                eprintln!("kubelet did not remove every pod in time; removing leftovers directly");
            }
        }
        self.stop(libc::SIGTERM);
        // Whatever is left (a failed test, a crashed kubelet) goes too.
        for sb in self.our_sandboxes().await {
            let _ = self.runtime.stop_pod_sandbox(&sb.id).await;
            let _ = self.runtime.remove_pod_sandbox(&sb.id).await;
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("rm -rf /var/log/pods/*-{node}_* /var/log/containers/*-{node}_*", node = self.node))
            .status();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // Tests call cleanup() themselves; this only runs when a test panicked first.
        if self.child.is_some() {
            let node = self.node.clone();
            self.stop(libc::SIGTERM);
            let rt = self.runtime.clone();
            let _ = std::thread::spawn(move || {
                let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                tokio_rt.block_on(async move {
                    let suffix = format!("-{node}");
                    for sb in rt.list_pod_sandboxes(None).await.unwrap_or_default() {
                        if sb.metadata.as_ref().is_some_and(|m| m.name.ends_with(&suffix)) {
                            let _ = rt.stop_pod_sandbox(&sb.id).await;
                            let _ = rt.remove_pod_sandbox(&sb.id).await;
                        }
                    }
                });
            })
            .join();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 200 ms until it returns Some or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, f: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

pub fn container_status<'a>(p: &'a Pod, name: &str) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let s = p.status.as_ref()?;
    s.container_statuses.iter().chain(s.init_container_statuses.iter()).flatten().find(|c| c.name == name)
}

pub fn waiting_reason<'a>(p: &'a Pod, name: &str) -> Option<&'a str> {
    container_status(p, name)?.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

pub fn is_running(p: &Pod, name: &str) -> bool {
    container_status(p, name).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some())
}

pub fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// The pod's emptyDir volume `name` on the host.
pub fn empty_dir(k: &Kubelet, pod: &Pod, name: &str) -> PathBuf {
    k.dir.path().join("root/pods").join(uid(pod)).join("volumes/kubernetes.io~empty-dir").join(name)
}

pub fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
