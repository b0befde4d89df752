//! What a benchmark run collects: samples per workload and engine, reduced
//! to min/median/max, and the ratios between engines of the same run.

use std::collections::BTreeMap;
use std::fmt;

/// Who ran a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runner {
    /// popek, binary translation.
    Bt,
    /// popek, hardware-assisted (/dev/kvm).
    Kvm,
    /// QEMU's full emulation (TCG).
    Qemu,
    /// The same static i386 program as a host process.
    Native,
}

impl Runner {
    /// Every runner, in table order.
    pub const ALL: [Runner; 4] = [Runner::Bt, Runner::Kvm, Runner::Qemu, Runner::Native];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Runner::Bt => "bt",
            Runner::Kvm => "kvm",
            Runner::Qemu => "qemu",
            Runner::Native => "native",
        }
    }
}

impl fmt::Display for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Min, median and max of a series of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The smallest sample.
    pub min: f64,
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            min: v[0],
            median,
            max: v[n - 1],
            n,
        })
    }
}

/// Translation-cache and exit counters of one workload under bt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcCounters {
    /// Lookups that found a translation, of all lookups (0..1).
    pub hit_rate: Option<f64>,
    /// Blocks translated.
    pub blocks: u64,
    /// Exit jumps chained to another block.
    pub chained: u64,
    /// Chained jumps undone.
    pub unchained: u64,
    /// Chunks evicted to make room.
    pub evictions: u64,
    /// Guest writes that invalidated translations.
    pub smc_invalidations: u64,
    /// Exits from guest code to the monitor, of every reason.
    pub exits: u64,
    /// Instructions the monitor carried out for the guest.
    pub callouts: u64,
}

impl TcCounters {
    /// The counters of a bt statistics object: a whole run's (`"cache"`,
    /// `"exits"` and `"callouts"` maps) or a phase's.
    pub fn from_json(v: &serde_json::Value) -> TcCounters {
        let cache = &v["cache"];
        let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        let total = |x: &serde_json::Value| match x {
            serde_json::Value::Object(m) => m.values().map(n).sum(),
            other => n(other),
        };
        TcCounters {
            hit_rate: cache["hit_rate"].as_f64(),
            blocks: n(&cache["blocks_translated"]),
            chained: n(&cache["chained_jumps"]),
            unchained: n(&cache["unchained_jumps"]),
            evictions: n(&cache["evictions"]),
            smc_invalidations: n(&cache["smc_invalidations"]),
            exits: total(&v["exits"]),
            callouts: total(&v["callouts"]),
        }
    }
}

/// One workload's results.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// `group/name`, e.g. `linux/forkwait`.
    pub name: String,
    /// What one sample measures, e.g. `cycles/round`.
    pub unit: &'static str,
    /// Samples per runner.
    pub samples: BTreeMap<Runner, Vec<f64>>,
    /// The first (cold translation cache) sample per runner, where the
    /// workload ran several times in one boot.
    pub cold: BTreeMap<Runner, f64>,
    /// bt's counters for this workload.
    pub tc: Option<TcCounters>,
    /// Why a runner has no samples.
    pub missing: BTreeMap<Runner, String>,
}

impl Workload {
    /// A workload with no results yet.
    pub fn new(name: impl Into<String>, unit: &'static str) -> Workload {
        Workload {
            name: name.into(),
            unit,
            ..Workload::default()
        }
    }

    /// The summary of one runner's samples.
    pub fn summary(&self, r: Runner) -> Option<Summary> {
        self.samples.get(&r).and_then(|s| Summary::of(s))
    }

    /// bt's median over `other`'s: how many times slower bt is.
    pub fn ratio(&self, other: Runner) -> Option<f64> {
        let bt = self.summary(Runner::Bt)?.median;
        let o = self.summary(other)?.median;
        (o > 0.0).then(|| bt / o)
    }
}

/// One point of the translation-cache size sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// The workload swept (`demo` or `linux/boot`).
    pub workload: String,
    /// `--tc-size` in bytes.
    pub tc_size: u32,
    /// Seconds of wall time.
    pub seconds: f64,
    /// The run's counters.
    pub tc: TcCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.n), (1.0, 2.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_is_bt_over_the_other_runner() {
        let mut w = Workload::new("x", "cycles");
        w.samples.insert(Runner::Bt, vec![10.0, 30.0, 20.0]);
        w.samples.insert(Runner::Native, vec![5.0]);
        assert_eq!(w.ratio(Runner::Native), Some(4.0));
        assert_eq!(w.ratio(Runner::Qemu), None);
    }

    #[test]
    fn counters_from_a_phase_and_from_a_whole_run() {
        let phase: serde_json::Value = serde_json::from_str(
            r#"{"mark":"x","cache":{"hit_rate":0.5,"blocks_translated":7,"chained_jumps":3,
                "unchained_jumps":1,"evictions":2,"smc_invalidations":4},"exits":9,"callouts":8}"#,
        )
        .unwrap();
        let c = TcCounters::from_json(&phase);
        assert_eq!(c.hit_rate, Some(0.5));
        assert_eq!((c.blocks, c.chained, c.unchained), (7, 3, 1));
        assert_eq!(
            (c.evictions, c.smc_invalidations, c.exits, c.callouts),
            (2, 4, 9, 8)
        );
        let run: serde_json::Value =
            serde_json::from_str(r#"{"cache":{},"exits":{"a":2,"b":3},"callouts":{"in":1}}"#)
                .unwrap();
        let c = TcCounters::from_json(&run);
        assert_eq!((c.exits, c.callouts, c.hit_rate), (5, 1, None));
    }
}
