//! A set of logical CPU IDs in the Linux list format (`0-3,5`), as k8s.io/utils/cpuset.

use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<usize>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpuset {text:?}: {why}")]
pub struct ParseError {
    pub text: String,
    pub why: String,
}

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn of(cpus: impl IntoIterator<Item = usize>) -> Self {
        CpuSet(cpus.into_iter().collect())
    }

    /// Parses `0-3,5` (cpuset.Parse): empty text is the empty set; ranges must not be backwards.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let err = |why: String| ParseError { text: text.to_string(), why };
        let mut set = BTreeSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in trimmed.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
                None => (part.trim().parse::<usize>(), part.trim().parse::<usize>()),
            };
            match (a, b) {
                (Ok(a), Ok(b)) if a <= b => set.extend(a..=b),
                (Ok(a), Ok(b)) => return Err(err(format!("range {a}-{b} is backwards"))),
                _ => return Err(err(format!("{part:?} is not a cpu number or range"))),
            }
        }
        Ok(CpuSet(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// Ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    pub fn is_subset_of(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn filter(&self, f: impl Fn(usize) -> bool) -> CpuSet {
        CpuSet(self.0.iter().copied().filter(|c| f(*c)).collect())
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

/// The canonical list form: ascending, consecutive runs as ranges (`0-2,4`), empty for none.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = self.to_vec();
        let mut i = 0;
        let mut first = true;
        while i < cpus.len() {
            let start = cpus[i];
            let mut end = start;
            while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
                i += 1;
                end = cpus[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_list_format() {
        let s = CpuSet::parse("0-2,4,6-7,1").unwrap();
        assert_eq!(s.to_vec(), vec![0, 1, 2, 4, 6, 7]);
        assert_eq!(s.to_string(), "0-2,4,6-7");
        assert_eq!(CpuSet::parse("").unwrap().to_string(), "");
        assert_eq!(CpuSet::of([3]).to_string(), "3");
        assert!(CpuSet::parse("3-1").is_err());
        assert!(CpuSet::parse("a").is_err());
        assert!(CpuSet::parse("1,,2").is_err());
    }
}
