//! NUMA affinity masks (upstream pkg/kubelet/cm/topologymanager/bitmask): bit n = NUMA node n.

use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BitMask(pub u64);

impl BitMask {
    pub fn of(bits: &[usize]) -> BitMask {
        BitMask(bits.iter().fold(0u64, |m, b| m | (1u64 << b)))
    }

    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    pub fn is_set(self, bit: usize) -> bool {
        bit < 64 && self.0 & (1 << bit) != 0
    }

    pub fn bits(self) -> Vec<usize> {
        (0..64).filter(|b| self.is_set(*b)).collect()
    }

    pub fn and(self, other: BitMask) -> BitMask {
        BitMask(self.0 & other.0)
    }

    /// Fewer bits set, or as many and a lower value (upstream's IsNarrowerThan / IsLessThan).
    pub fn is_narrower_than(self, other: BitMask) -> bool {
        if self.count() == other.count() { self.0 < other.0 } else { self.count() < other.count() }
    }
}

impl fmt::Display for BitMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:b}", self.0)
    }
}

/// Every non-empty subset of `bits`, smallest first, in combination order (IterateBitMasks).
pub fn iterate(bits: &[usize], mut f: impl FnMut(BitMask)) {
    fn go(bits: &[usize], k: usize, start: usize, acc: &mut Vec<usize>, f: &mut dyn FnMut(BitMask)) {
        if acc.len() == k {
            f(BitMask::of(acc));
            return;
        }
        for i in start..bits.len() {
            acc.push(bits[i]);
            go(bits, k, i + 1, acc, f);
            acc.pop();
        }
    }
    for k in 1..=bits.len() {
        go(bits, k, 0, &mut Vec::new(), &mut f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_come_smallest_first() {
        let mut seen = Vec::new();
        iterate(&[0, 1, 2], |m| seen.push(m.0));
        assert_eq!(seen, vec![0b001, 0b010, 0b100, 0b011, 0b101, 0b110, 0b111]);
        assert!(BitMask::of(&[1]).is_narrower_than(BitMask::of(&[0, 1])));
        assert!(BitMask::of(&[0]).is_narrower_than(BitMask::of(&[1])));
    }
}
