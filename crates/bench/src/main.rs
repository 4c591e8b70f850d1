//! `kubelet-bench`: measures the kubelet against its baseline in the same run and prints the
//! figures and ratios (see BENCHMARKS.md for recorded results):
//! - pod start: manifest written → Running visible on /pods, vs RunPodSandbox + CreateContainer +
//!   StartContainer done directly with the same configs (p50/p99 over `--runs`);
//! - `--burst` pods at once, vs the same raw calls at the same concurrency;
//! - container exit → terminated state visible on /pods;
//! - kubelet RSS and CPU idle and with `--burst` pods;
//! - 1,000 and 5,000 pods on the fake runtime (in process): time to all Running, per-pod cost;
//! - churn: rounds of 1,000 pods created and deleted on the fake runtime, RSS after each round;
//! - `--hollow N,M`: hollow nodes (`kubelet-hollow`) against testapi — RSS and CPU per node, pods
//!   per second sustained, node Ready and lease renewals (`--hollow-only` runs just these).
//!
//! Needs containerd and the local registry (hack/env-up.sh) for everything but `--fake-only`.

mod fake_scale;
mod hollow;
mod real;

use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug)]
pub struct Args {
    /// The kubelet binary to measure.
    #[arg(long, default_value = "target/release/kubelet")]
    pub kubelet: std::path::PathBuf,
    /// Sequential pod starts per side.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Pods started at once.
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// Pod counts for the fake-runtime scale runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub scale: Vec<usize>,
    /// Pods per round of the churn check (create, run, delete), 0 to skip it.
    #[arg(long, default_value_t = 1000)]
    pub churn: usize,
    /// Rounds of the churn check.
    #[arg(long, default_value_t = 5)]
    pub churn_rounds: usize,
    /// Only the fake-runtime scale runs (no containerd needed).
    #[arg(long)]
    pub fake_only: bool,
    /// The fake runtime answers GetContainerEvents with Unimplemented (as containerd 1.6): the
    /// PLEG relists every second instead.
    #[arg(long)]
    pub fake_no_events: bool,
    #[arg(long, default_value = "127.0.0.1:5000/busybox:1.36")]
    pub image: String,
    /// Hollow node counts to run against testapi (e.g. 10,100); none by default.
    #[arg(long, value_delimiter = ',')]
    pub hollow: Vec<usize>,
    /// Only the hollow node runs.
    #[arg(long)]
    pub hollow_only: bool,
    /// Pods per hollow node (kubemark's density test uses 30).
    #[arg(long, default_value_t = 30)]
    pub hollow_pods_per_node: usize,
    /// Pod creations in flight at once in the hollow runs.
    #[arg(long, default_value_t = 16)]
    pub hollow_concurrency: usize,
    /// The testapi binary [default: next to kubelet-bench].
    #[arg(long)]
    pub testapi: Option<std::path::PathBuf>,
    /// The kubelet-hollow binary [default: next to kubelet-bench].
    #[arg(long)]
    pub hollow_bin: Option<std::path::PathBuf>,
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("# kubelet-bench");
    println!("machine: {} CPUs, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), mem_total());
    if !args.hollow.is_empty() {
        let opts = hollow::Options {
            testapi: args.testapi.clone().unwrap_or_else(|| hollow::sibling("testapi")),
            hollow: args.hollow_bin.clone().unwrap_or_else(|| hollow::sibling("kubelet-hollow")),
            pods_per_node: args.hollow_pods_per_node,
            concurrency: args.hollow_concurrency,
        };
        hollow::run(&opts, &args.hollow).await?;
    }
    if args.hollow_only {
        return Ok(());
    }
    if !args.fake_only {
        // One kubelet per runtime: wait for any e2e run (same lock as the e2e harness).
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("kubelet-rs-e2e.lock"))?;
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            anyhow::bail!("cannot take the e2e lock");
        }
        real::run(&args).await?;
        drop(lock);
    }
    for n in &args.scale {
        fake_scale::run(*n, !args.fake_no_events).await?;
    }
    if args.churn > 0 {
        fake_scale::churn(args.churn, args.churn_rounds).await?;
    }
    Ok(())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default()
}
