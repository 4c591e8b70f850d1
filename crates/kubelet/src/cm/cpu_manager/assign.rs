//! Picking CPUs by topology (upstream cpumanager/cpu_assignment.go): `take_packed` fills whole
//! NUMA nodes / sockets, then whole cores, then single threads, emptiest-last so allocations
//! pack together; `take_distributed` (option `distribute-cpus-across-numa`) spreads a request
//! evenly over the fewest NUMA nodes that can hold it.

use crate::cm::topology::cpuset::CpuSet;
use crate::cm::topology::{CpuTopology, Details};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not enough cpus available to satisfy request: requested={requested}, available={available}")]
    NotEnough { requested: usize, available: usize },
    #[error("failed to allocate cpus")]
    Failed,
}

struct Acc<'a> {
    topo: &'a CpuTopology,
    free: Details,
    needed: isize,
    result: CpuSet,
    /// NUMA nodes hold one or more sockets (numaFirst) rather than the other way round.
    numa_first: bool,
}

impl<'a> Acc<'a> {
    fn new(topo: &'a CpuTopology, available: &CpuSet, n: usize) -> Self {
        Acc {
            topo,
            free: topo.details.keep_only(available),
            needed: n as isize,
            result: CpuSet::new(),
            numa_first: topo.num_sockets >= topo.num_numa_nodes,
        }
    }

    fn take(&mut self, cpus: &CpuSet) {
        self.result = self.result.union(cpus);
        self.free = self.free.keep_only(&self.free.cpus().difference(&self.result));
        self.needed -= cpus.len() as isize;
    }

    fn satisfied(&self) -> bool {
        self.needed < 1
    }

    fn failed(&self) -> bool {
        self.needed > self.free.cpus().len() as isize
    }

    fn needs_at_least(&self, n: usize) -> bool {
        self.needed >= n as isize
    }

    /// Ascending by free CPUs, then by ID (cpuAccumulator.sort).
    fn sort(&self, ids: &mut [usize], cpus: impl Fn(usize) -> usize) {
        ids.sort_by_key(|id| (cpus(*id), *id));
    }

    fn sorted_numa_nodes(&self) -> Vec<usize> {
        if self.numa_first {
            let mut ids: Vec<usize> = self.free.numa_nodes().into_iter().collect();
            self.sort(&mut ids, |n| self.free.cpus_in_numa_nodes(&[n]).len());
            ids
        } else {
            let mut out = Vec::new();
            for s in self.sorted_sockets() {
                let mut ids: Vec<usize> = self.free.numa_nodes_in_sockets(&[s]).into_iter().collect();
                self.sort(&mut ids, |n| self.free.cpus_in_numa_nodes(&[n]).len());
                out.extend(ids);
            }
            out
        }
    }

    fn sorted_sockets(&self) -> Vec<usize> {
        if self.numa_first {
            let mut out = Vec::new();
            for n in self.sorted_numa_nodes() {
                let mut ids: Vec<usize> = self.free.sockets_in_numa_nodes(&[n]).into_iter().collect();
                self.sort(&mut ids, |s| self.free.cpus_in_sockets(&[s]).len());
                out.extend(ids);
            }
            out
        } else {
            let mut ids: Vec<usize> = self.free.sockets().into_iter().collect();
            self.sort(&mut ids, |s| self.free.cpus_in_sockets(&[s]).len());
            ids
        }
    }

    fn sorted_cores(&self) -> Vec<usize> {
        let mut out = Vec::new();
        if self.numa_first {
            for s in self.sorted_sockets() {
                let mut ids: Vec<usize> = self.free.cores_in_sockets(&[s]).into_iter().collect();
                self.sort(&mut ids, |c| self.free.cpus_in_cores(&[c]).len());
                out.extend(ids);
            }
        } else {
            for n in self.sorted_numa_nodes() {
                let mut ids: Vec<usize> = self.free.cores_in_numa_nodes(&[n]).into_iter().collect();
                self.sort(&mut ids, |c| self.free.cpus_in_cores(&[c]).len());
                out.extend(ids);
            }
        }
        out
    }

    fn sorted_cpus(&self) -> Vec<usize> {
        self.sorted_cores().into_iter().flat_map(|c| self.free.cpus_in_cores(&[c]).to_vec()).collect()
    }

    fn take_full_numa_nodes(&mut self) {
        for n in self.sorted_numa_nodes() {
            let all = self.topo.details.cpus_in_numa_nodes(&[n]);
            if self.free.cpus_in_numa_nodes(&[n]).len() != all.len() || !self.needs_at_least(all.len()) {
                continue;
            }
            self.take(&all);
        }
    }

    fn take_full_sockets(&mut self) {
        for s in self.sorted_sockets() {
            let all = self.topo.details.cpus_in_sockets(&[s]);
            if self.free.cpus_in_sockets(&[s]).len() != self.topo.cpus_per_socket() || !self.needs_at_least(all.len()) {
                continue;
            }
            self.take(&all);
        }
    }

    fn take_full_cores(&mut self) {
        for c in self.sorted_cores() {
            let all = self.topo.details.cpus_in_cores(&[c]);
            if self.free.cpus_in_cores(&[c]).len() != self.topo.cpus_per_core() || !self.needs_at_least(all.len()) {
                continue;
            }
            self.take(&all);
        }
    }

    fn take_remaining(&mut self) {
        for cpu in self.sorted_cpus() {
            self.take(&CpuSet::of([cpu]));
            if self.satisfied() {
                return;
            }
        }
    }
}

/// takeByTopologyNUMAPacked.
pub fn take_packed(topo: &CpuTopology, available: &CpuSet, n: usize) -> Result<CpuSet, Error> {
    let mut acc = Acc::new(topo, available, n);
    if acc.satisfied() {
        return Ok(acc.result);
    }
    if acc.failed() {
        return Err(Error::NotEnough { requested: n, available: available.len() });
    }
    if acc.numa_first {
        acc.take_full_numa_nodes();
        if !acc.satisfied() {
            acc.take_full_sockets();
        }
    } else {
        acc.take_full_sockets();
        if !acc.satisfied() {
            acc.take_full_numa_nodes();
        }
    }
    if acc.satisfied() {
        return Ok(acc.result);
    }
    acc.take_full_cores();
    if acc.satisfied() {
        return Ok(acc.result);
    }
    acc.take_remaining();
    if acc.satisfied() {
        return Ok(acc.result);
    }
    Err(Error::Failed)
}

fn std_dev(xs: &[usize]) -> f64 {
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let mean = round(xs.iter().sum::<usize>() as f64 / xs.len() as f64);
    round((xs.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt())
}

fn combinations(n: &[usize], k: usize, f: &mut dyn FnMut(&[usize]) -> bool) {
    fn go(n: &[usize], k: usize, start: usize, acc: &mut Vec<usize>, f: &mut dyn FnMut(&[usize]) -> bool) -> bool {
        if acc.len() == k {
            return f(acc);
        }
        for i in start..n.len() {
            acc.push(n[i]);
            let stop = go(n, k, i + 1, acc, f);
            acc.pop();
            if stop {
                return true;
            }
        }
        false
    }
    if k >= 1 {
        go(n, k, 0, &mut Vec::new(), f);
    }
}

/// takeByTopologyNUMADistributed (KEP-2902): the fewest NUMA nodes over which the request
/// (in groups of `group` CPUs) splits evenly, the remainder where it leaves the nodes most
/// balanced (least standard deviation of free CPUs); else packed.
pub fn take_distributed(topo: &CpuTopology, available: &CpuSet, n: usize, group: usize) -> Result<CpuSet, Error> {
    let group = group.max(1);
    if !n.is_multiple_of(group) {
        return take_packed(topo, available, n);
    }
    let mut acc = Acc::new(topo, available, n);
    if acc.satisfied() {
        return Ok(acc.result);
    }
    if acc.failed() {
        return Err(Error::NotEnough { requested: n, available: available.len() });
    }
    let numas = acc.sorted_numa_nodes();
    // rangeNUMANodesNeededToSatisfy
    let total_nodes = topo.details.numa_nodes().len().max(1);
    let groups = (topo.num_cpus - 1) / group + 1;
    let groups_per_node = (groups - 1) / total_nodes + 1;
    let groups_needed = (n - 1) / group + 1;
    let min_nodes = (groups_needed - 1) / groups_per_node + 1;
    let max_nodes = groups_needed.min(acc.free.numa_nodes().len());
    let free_in = |acc: &Acc, numa: usize| acc.free.cpus_in_numa_nodes(&[numa]).len();
    for k in min_nodes..=max_nodes {
        let mut best_balance = f64::MAX;
        let mut best: Option<(Vec<usize>, Vec<usize>)> = None;
        combinations(&numas, k, &mut |combo| {
            if best_balance == 0.0 {
                return true;
            }
            if acc.free.cpus_in_numa_nodes(combo).len() < n {
                return false;
            }
            let fit: usize = combo.iter().map(|m| free_in(&acc, *m) / group).sum();
            if fit * group < n {
                return false;
            }
            let distribution = (n / combo.len() / group) * group;
            if combo.iter().any(|m| free_in(&acc, *m) < distribution) {
                return false;
            }
            let mut after: Vec<(usize, usize)> = numas.iter().map(|m| (*m, free_in(&acc, *m))).collect();
            for (m, free) in after.iter_mut() {
                if combo.contains(m) {
                    *free -= distribution;
                }
            }
            let remainder = n - distribution * combo.len();
            let candidates: Vec<usize> =
                combo.iter().copied().filter(|m| after.iter().any(|(x, f)| x == m && *f >= group)).collect();
            let mut local_best = f64::MAX;
            let mut local_rem: Vec<usize> = Vec::new();
            if remainder == 0 {
                local_best = std_dev(&after.iter().map(|(_, f)| *f).collect::<Vec<_>>());
            }
            let mut r = candidates.len();
            while remainder > 0 && r >= 1 {
                combinations(&candidates, r, &mut |subset| {
                    let mut after = after.clone();
                    let room: usize = after.iter().filter(|(m, _)| subset.contains(m)).map(|(_, f)| *f).sum();
                    if room < remainder {
                        return false;
                    }
                    let mut left = remainder;
                    while left > 0 {
                        let before = left;
                        for m in subset {
                            if left == 0 {
                                break;
                            }
                            let Some(entry) = after.iter_mut().find(|(x, _)| x == m) else { continue };
                            if entry.1 < group {
                                continue;
                            }
                            entry.1 -= group;
                            left -= group;
                        }
                        if left == before {
                            return false;
                        }
                    }
                    let balance = std_dev(&after.iter().map(|(_, f)| *f).collect::<Vec<_>>());
                    if balance < local_best {
                        local_best = balance;
                        local_rem = subset.to_vec();
                    }
                    false
                });
                r -= 1;
            }
            if local_best < best_balance {
                best_balance = local_best;
                best = Some((combo.to_vec(), local_rem));
            }
            false
        });
        let Some((combo, rem)) = best else { continue };
        let distribution = (n / combo.len() / group) * group;
        for m in &combo {
            let cpus = take_packed(topo, &acc.free.cpus_in_numa_nodes(&[*m]), distribution)?;
            acc.take(&cpus);
        }
        let mut remainder = n - distribution * combo.len();
        while remainder > 0 {
            let before = remainder;
            for m in &rem {
                if remainder == 0 {
                    break;
                }
                if acc.free.cpus_in_numa_nodes(&[*m]).len() < group {
                    continue;
                }
                let cpus = take_packed(topo, &acc.free.cpus_in_numa_nodes(&[*m]), group)?;
                acc.take(&cpus);
                remainder -= group;
            }
            if remainder == before {
                return Err(Error::Failed);
            }
        }
        if acc.needed != 0 {
            return Err(Error::Failed);
        }
        return Ok(acc.result);
    }
    take_packed(topo, available, n)
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;
