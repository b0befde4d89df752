//! The BT engine's counters: the translation cache's, plus exits and
//! callouts by reason, and where the time went.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::cache::Stats;
use crate::contract::Inline;
use crate::mmu::MmuStats;
use crate::monitor::RegionStats;

/// Counters of one run of the BT engine.
#[derive(Clone, Debug, Default)]
pub struct BtStats {
    /// The translation cache's counters at the end of the run.
    pub cache: Stats,
    /// Exits from translated code and direct execution, by reason.
    pub exits: BTreeMap<&'static str, u64>,
    /// Callouts (instructions the monitor carried out), by kind.
    pub callouts: BTreeMap<&'static str, u64>,
    /// Instructions translated code carried out inline on the virtual CPU
    /// instead of calling out, by kind.
    pub inlined: BTreeMap<&'static str, u64>,
    /// External interrupts delivered to the guest.
    pub interrupts: u64,
    /// The shadow MMU's counters.
    pub mmu: MmuStats,
    /// How often the monitor region was closed for guest user code and
    /// opened again, and whether huge pages back it.
    pub region: RegionStats,
    /// Wall time spent running guest user code directly.
    pub direct: Duration,
    /// Wall time spent in translated code.
    pub translated: Duration,
    /// Wall time of the whole run.
    pub total: Duration,
    /// Cache counters between consecutive port-0x80 markers: (marker that
    /// ended the phase, counters during the phase).
    pub phases: Vec<(u8, Stats)>,
}

impl BtStats {
    /// Counts one exit of `reason`.
    pub fn exit(&mut self, reason: &'static str) {
        *self.exits.entry(reason).or_default() += 1;
    }

    /// Counts one callout of `kind`.
    pub fn callout(&mut self, kind: &'static str) {
        *self.callouts.entry(kind).or_default() += 1;
    }

    /// Records the vCPU area's inline counters (in
    /// [`Inline`] order); kinds that never ran are left
    /// out, as callouts are.
    pub fn set_inlined(&mut self, counts: [u32; Inline::ALL.len()]) {
        for (kind, n) in Inline::ALL.iter().zip(counts) {
            if n != 0 {
                self.inlined.insert(kind.name(), u64::from(n));
            }
        }
    }

    /// Time in the monitor: neither guest user code nor translated code.
    pub fn monitor(&self) -> Duration {
        self.total.saturating_sub(self.direct + self.translated)
    }

    fn map_json(m: &BTreeMap<&'static str, u64>) -> String {
        let items: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", items.join(","))
    }

    fn fields_json(fields: &[(&'static str, u64)]) -> String {
        let items: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{}\":{v}", k.replace(' ', "_")))
            .collect();
        format!("{{{}}}", items.join(","))
    }

    fn region_json(&self) -> String {
        let r = &self.region;
        format!(
            "{{\"opens\":{},\"closes\":{},\"huge_kb\":{}}}",
            r.opens, r.closes, r.huge_kb
        )
    }

    /// Every counter as one JSON object, for `--stats-json`.
    pub fn to_json(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(m, s)| format!("{{\"marker\":{m},\"cache\":{}}}", s.to_json()))
            .collect();
        format!(
            "{{\"engine\":\"bt\",\"cache\":{},\"exits\":{},\"callouts\":{},\"inlined\":{},\"interrupts\":{},\
             \"mmu\":{},\"monitor_region\":{},\"time_s\":{{\"direct\":{},\"translated\":{},\"monitor\":{},\"total\":{}}},\"phases\":[{}]}}",
            self.cache.to_json(),
            Self::map_json(&self.exits),
            Self::map_json(&self.callouts),
            Self::map_json(&self.inlined),
            self.interrupts,
            Self::fields_json(&self.mmu.fields()),
            self.region_json(),
            self.direct.as_secs_f64(),
            self.translated.as_secs_f64(),
            self.monitor().as_secs_f64(),
            self.total.as_secs_f64(),
            phases.join(","),
        )
    }
}

fn share(part: Duration, total: Duration) -> f64 {
    if total.is_zero() {
        0.0
    } else {
        100.0 * part.as_secs_f64() / total.as_secs_f64()
    }
}

impl fmt::Display for BtStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cache)?;
        writeln!(f, "time")?;
        for (name, d) in [
            ("direct execution", self.direct),
            ("translated code", self.translated),
            ("monitor", self.monitor()),
        ] {
            writeln!(
                f,
                "  {name:<24} {:>10.3} ms {:>5.1}%",
                d.as_secs_f64() * 1e3,
                share(d, self.total)
            )?;
        }
        writeln!(
            f,
            "  {:<24} {:>10.3} ms",
            "total",
            self.total.as_secs_f64() * 1e3
        )?;
        writeln!(f, "exits")?;
        for (k, v) in &self.exits {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(f, "callouts")?;
        for (k, v) in &self.callouts {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(
            f,
            "  {:<24} {:>14}",
            "(interrupts delivered)", self.interrupts
        )?;
        writeln!(f, "inlined (no callout)")?;
        for (k, v) in &self.inlined {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(f, "shadow mmu")?;
        for (k, v) in self.mmu.fields() {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(f, "monitor region (closed while guest user code runs)")?;
        for (k, v) in self.region.fields() {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_table_carry_the_same_counters() {
        let mut s = BtStats::default();
        s.exit("callout");
        s.exit("callout");
        s.callout("out");
        s.set_inlined([3, 0, 1, 0, 0, 0, 0]);
        s.total = Duration::from_millis(10);
        s.translated = Duration::from_millis(4);
        s.direct = Duration::from_millis(1);
        s.phases.push((2, Stats::default()));
        let j = s.to_json();
        assert!(j.contains("\"exits\":{\"callout\":2}"), "{j}");
        assert!(j.contains("\"callouts\":{\"out\":1}"), "{j}");
        assert!(j.contains("\"inlined\":{\"cli\":3,\"pushf\":1}"), "{j}");
        assert!(j.contains("\"monitor\":0.005"), "{j}");
        assert!(j.contains("\"phases\":[{\"marker\":2,"), "{j}");
        s.mmu.cr3_switches = 7;
        assert!(s.to_json().contains("\"cr3_switches\":7"));
        assert!(s.to_string().contains("cr3 switches"));
        s.region = RegionStats {
            opens: 5,
            closes: 6,
            huge_kb: 4096,
        };
        let j = s.to_json();
        assert!(
            j.contains("\"monitor_region\":{\"opens\":5,\"closes\":6,\"huge_kb\":4096}"),
            "{j}"
        );
        let t = s.to_string();
        assert!(t.contains("monitor region"), "{t}");
        assert!(t.contains("\n  closes "), "{t}");
        assert!(t.contains("huge pages (KiB)"), "{t}");
        let t = s.to_string();
        assert!(t.contains("translated code"), "{t}");
        assert!(t.contains("40.0%"), "{t}");
        assert!(t.contains("inlined (no callout)\n  cli "), "{t}");
    }
}
