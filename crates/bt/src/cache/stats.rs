//! Translation-cache counters (design.md section 4, "Statistics").

use std::fmt;

/// Counters kept by the translation cache; all monotonic for a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups of a guest EIP.
    pub lookups: u64,
    /// Lookups that found a translation.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Blocks inserted.
    pub blocks_translated: u64,
    /// Guest instructions in the inserted blocks.
    pub guest_insns_translated: u64,
    /// Exit jumps patched to go straight to another block.
    pub chained_jumps: u64,
    /// Chained jumps restored to their exit stubs.
    pub unchained_jumps: u64,
    /// Whole-cache flushes (asked for, such as on a machine reset).
    pub flushes: u64,
    /// Code-buffer chunks evicted (least recently used first) to make room.
    pub evictions: u64,
    /// Blocks dropped by evictions and flushes.
    pub evicted_blocks: u64,
    /// Guest-page writes that invalidated at least one block.
    pub smc_invalidations: u64,
    /// Blocks dropped by those invalidations.
    pub smc_blocks: u64,
    /// Indirect branches that translated code resolved itself through the
    /// inline table probe, without a lookup by the dispatcher (counted by
    /// the probe in the vCPU area; filled in by the engine).
    pub inline_hits: u64,
}

impl Stats {
    /// Of all the times a guest EIP had to be found (dispatcher lookups
    /// and inline probes), the share found without translating, or `None`
    /// before the first. Chained jumps need no lookup and are not counted.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.lookups + self.inline_hits;
        (lookups != 0).then(|| (self.hits + self.inline_hits) as f64 / lookups as f64)
    }

    /// What happened between `earlier` and `self` (counter by counter).
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            lookups: self.lookups - earlier.lookups,
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
            blocks_translated: self.blocks_translated - earlier.blocks_translated,
            guest_insns_translated: self.guest_insns_translated - earlier.guest_insns_translated,
            chained_jumps: self.chained_jumps - earlier.chained_jumps,
            unchained_jumps: self.unchained_jumps - earlier.unchained_jumps,
            flushes: self.flushes - earlier.flushes,
            evictions: self.evictions - earlier.evictions,
            evicted_blocks: self.evicted_blocks - earlier.evicted_blocks,
            smc_invalidations: self.smc_invalidations - earlier.smc_invalidations,
            smc_blocks: self.smc_blocks - earlier.smc_blocks,
            inline_hits: self.inline_hits - earlier.inline_hits,
        }
    }

    /// The counters as (JSON key, value) pairs in a fixed order, shared by
    /// the table and the JSON so the two cannot drift apart.
    fn fields(&self) -> [(&'static str, u64); 13] {
        [
            ("lookups", self.lookups),
            ("hits", self.hits),
            ("misses", self.misses),
            ("blocks_translated", self.blocks_translated),
            ("guest_insns_translated", self.guest_insns_translated),
            ("chained_jumps", self.chained_jumps),
            ("unchained_jumps", self.unchained_jumps),
            ("flushes", self.flushes),
            ("evictions", self.evictions),
            ("evicted_blocks", self.evicted_blocks),
            ("smc_invalidations", self.smc_invalidations),
            ("smc_blocks", self.smc_blocks),
            ("inline_hits", self.inline_hits),
        ]
    }

    /// One JSON object with every counter and `hit_rate` (null before any
    /// lookup), for `--stats-json`.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (k, v) in self.fields() {
            s.push_str(&format!("\"{k}\":{v},"));
        }
        match self.hit_rate() {
            Some(r) => s.push_str(&format!("\"hit_rate\":{r}")),
            None => s.push_str("\"hit_rate\":null"),
        }
        s.push('}');
        s
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "translation cache")?;
        for (k, v) in self.fields() {
            writeln!(f, "  {:<24} {:>14}", k.replace('_', " "), v)?;
        }
        match self.hit_rate() {
            Some(r) => writeln!(f, "  {:<24} {:>13.2}%", "hit rate", r * 100.0),
            None => writeln!(f, "  {:<24} {:>14}", "hit rate", "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        Stats {
            lookups: 4,
            hits: 3,
            misses: 1,
            blocks_translated: 1,
            guest_insns_translated: 9,
            chained_jumps: 2,
            unchained_jumps: 1,
            flushes: 1,
            evictions: 2,
            evicted_blocks: 5,
            smc_invalidations: 1,
            smc_blocks: 2,
            inline_hits: 0,
        }
    }

    #[test]
    fn hit_rate() {
        assert_eq!(Stats::default().hit_rate(), None);
        assert_eq!(sample().hit_rate(), Some(0.75));
    }

    #[test]
    fn json_has_every_counter() {
        let j = sample().to_json();
        assert_eq!(
            j,
            "{\"lookups\":4,\"hits\":3,\"misses\":1,\"blocks_translated\":1,\
             \"guest_insns_translated\":9,\"chained_jumps\":2,\"unchained_jumps\":1,\
             \"flushes\":1,\"evictions\":2,\"evicted_blocks\":5,\"smc_invalidations\":1,\"smc_blocks\":2,\
             \"inline_hits\":0,\"hit_rate\":0.75}"
        );
        assert!(Stats::default().to_json().ends_with("\"hit_rate\":null}"));
    }

    #[test]
    fn table_is_readable() {
        let t = sample().to_string();
        assert!(t.starts_with("translation cache\n"));
        assert!(t.contains("  guest insns translated                9\n"));
        assert!(t.contains("hit rate"));
        assert!(t.contains("75.00%"));
        assert_eq!(t.lines().count(), 15);
    }
}
