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
    pub exits: Tally,
    /// Callouts (instructions the monitor carried out), by kind.
    pub callouts: Tally,
    /// Instructions translated code carried out inline on the virtual CPU
    /// instead of calling out, by kind.
    pub inlined: BTreeMap<&'static str, u64>,
    /// External interrupts delivered to the guest.
    pub interrupts: u64,
    /// Turns passed to the user-code process (each way counts; 0 with
    /// `--one-process`).
    pub handoffs: u64,
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
    /// The counters between consecutive phase markers, in order.
    pub phases: Vec<Phase>,
}

/// Time spent in the hot paths (each run of translated code, each run of
/// guest user code), counted in TSC ticks and turned into time at the
/// rate the TSC went since the stopwatch started: an RDTSC is ~26 cycles
/// here, a monotonic clock reading ~63 and its conversion more, and a
/// callout took four readings for these counters alone. Needs an
/// invariant TSC, which every host of this machine kind has (the
/// counters are only statistics).
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    tsc0: u64,
    at0: std::time::Instant,
}

impl Stopwatch {
    /// A stopwatch whose rate is measured from now on.
    pub fn start() -> Stopwatch {
        Stopwatch {
            tsc0: machine::clock::host_tsc(),
            at0: std::time::Instant::now(),
        }
    }

    /// The time-stamp counter now.
    pub fn ticks() -> u64 {
        machine::clock::host_tsc()
    }

    /// `ticks` as time, at the rate measured so far.
    pub fn duration(&self, ticks: u64) -> Duration {
        let ns = self.at0.elapsed().as_nanos();
        let elapsed = u128::from(machine::clock::host_tsc().saturating_sub(self.tsc0));
        if elapsed == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((u128::from(ticks) * ns / elapsed) as u64)
    }
}

/// Counts by name, for the few dozen names of exits and callouts: one
/// is counted at every exit, where a `BTreeMap` keyed by the name compared
/// strings in each node (~1% of the monitor thread in fork+wait). A name
/// is found by its address first (each is a literal), by its text only
/// if that fails.
#[derive(Clone, Debug, Default)]
pub struct Tally(Vec<(&'static str, u64)>);

impl Tally {
    /// Counts one of `name`.
    pub fn add(&mut self, name: &'static str) {
        let same = |n: &&str| std::ptr::eq(*n, name);
        if let Some(e) = self.0.iter_mut().find(|(n, _)| same(n)) {
            e.1 += 1;
        } else if let Some(e) = self.0.iter_mut().find(|(n, _)| *n == name) {
            e.1 += 1;
        } else {
            self.0.push((name, 1));
        }
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, v)| v).sum()
    }

    /// The counts by name, in name order.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        self.0.iter().copied().collect()
    }
}

/// What ended a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A POST code the guest wrote to port 0x80 (guests of ours).
    Post(u8),
    /// A console line that started with `--mark-lines`' prefix: the rest
    /// of the line.
    Line(String),
    /// The end of the run (closes the last phase, when there were markers).
    Exit,
}

/// The counters of one phase: from one marker (or the start) to the next.
#[derive(Clone, Debug)]
pub struct Phase {
    /// The marker that ended the phase.
    pub marker: Marker,
    /// The translation cache's counters during the phase.
    pub cache: Stats,
    /// Exits of every reason.
    pub exits: u64,
    /// Callouts of every kind.
    pub callouts: u64,
    /// Exits by reason.
    pub exits_by: BTreeMap<&'static str, u64>,
    /// Callouts by kind.
    pub callouts_by: BTreeMap<&'static str, u64>,
    /// External interrupts delivered.
    pub interrupts: u64,
    /// The shadow MMU's counters during the phase.
    pub mmu: MmuStats,
    /// Wall time of the phase.
    pub wall: Duration,
    /// Of which running guest user code directly.
    pub direct: Duration,
    /// Of which in translated code.
    pub translated: Duration,
}

/// The running counters at a phase's start, to subtract at its end.
#[derive(Clone, Debug)]
pub struct PhaseStart {
    cache: Stats,
    exits: u64,
    callouts: u64,
    exits_by: BTreeMap<&'static str, u64>,
    callouts_by: BTreeMap<&'static str, u64>,
    interrupts: u64,
    mmu: MmuStats,
    at: std::time::Instant,
    direct: Duration,
    translated: Duration,
}

impl PhaseStart {
    /// The counters now: `cache` and `mmu` are the cache's and the shadow
    /// MMU's, the rest comes from `stats`.
    pub fn now(stats: &BtStats, cache: Stats, mmu: MmuStats) -> PhaseStart {
        PhaseStart {
            cache,
            exits: stats.exits.total(),
            callouts: stats.callouts.total(),
            exits_by: stats.exits.to_map(),
            callouts_by: stats.callouts.to_map(),
            interrupts: stats.interrupts,
            mmu,
            at: std::time::Instant::now(),
            direct: stats.direct,
            translated: stats.translated,
        }
    }

    /// The phase from `self` to `end`, ended by `marker`.
    pub fn until(&self, end: &PhaseStart, marker: Marker) -> Phase {
        Phase {
            marker,
            cache: end.cache.since(&self.cache),
            exits: end.exits - self.exits,
            callouts: end.callouts - self.callouts,
            exits_by: map_since(&end.exits_by, &self.exits_by),
            callouts_by: map_since(&end.callouts_by, &self.callouts_by),
            interrupts: end.interrupts - self.interrupts,
            mmu: end.mmu.since(&self.mmu),
            wall: end.at.duration_since(self.at),
            direct: end.direct.saturating_sub(self.direct),
            translated: end.translated.saturating_sub(self.translated),
        }
    }
}

/// The counts of `now` less those of `then`, leaving out kinds that did
/// not happen in between.
fn map_since(
    now: &BTreeMap<&'static str, u64>,
    then: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    now.iter()
        .map(|(k, v)| (*k, v - then.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v != 0)
        .collect()
}

impl Phase {
    /// The phase as one JSON object.
    pub fn to_json(&self) -> String {
        let marker = match &self.marker {
            Marker::Post(code) => format!("\"marker\":{code}"),
            Marker::Line(name) => format!("\"mark\":{}", json_string(name)),
            Marker::Exit => "\"exit\":true".to_string(),
        };
        format!(
            "{{{marker},\"cache\":{},\"exits\":{},\"callouts\":{},\"exits_by\":{},\"callouts_by\":{},\
             \"interrupts\":{},\"mmu\":{},\"time_s\":{{\"wall\":{},\"direct\":{},\"translated\":{}}}}}",
            self.cache.to_json(),
            self.exits,
            self.callouts,
            BtStats::map_json(&self.exits_by),
            BtStats::map_json(&self.callouts_by),
            self.interrupts,
            BtStats::fields_json(&self.mmu.fields()),
            self.wall.as_secs_f64(),
            self.direct.as_secs_f64(),
            self.translated.as_secs_f64(),
        )
    }
}

/// `s` as a JSON string literal; guest-chosen text, so every control
/// character and quote is escaped.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl BtStats {
    /// Counts one exit of `reason`.
    pub fn exit(&mut self, reason: &'static str) {
        self.exits.add(reason);
    }

    /// Counts one callout of `kind`.
    pub fn callout(&mut self, kind: &'static str) {
        self.callouts.add(kind);
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
        let phases: Vec<String> = self.phases.iter().map(Phase::to_json).collect();
        format!(
            "{{\"engine\":\"bt\",\"cache\":{},\"exits\":{},\"callouts\":{},\"inlined\":{},\"interrupts\":{},\
             \"handoffs\":{},\"mmu\":{},\"monitor_region\":{},\"time_s\":{{\"direct\":{},\"translated\":{},\"monitor\":{},\"total\":{}}},\"phases\":[{}]}}",
            self.cache.to_json(),
            Self::map_json(&self.exits.to_map()),
            Self::map_json(&self.callouts.to_map()),
            Self::map_json(&self.inlined),
            self.interrupts,
            self.handoffs,
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
        for (k, v) in &self.exits.to_map() {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(f, "callouts")?;
        for (k, v) in &self.callouts.to_map() {
            writeln!(f, "  {k:<24} {v:>14}")?;
        }
        writeln!(
            f,
            "  {:<24} {:>14}",
            "(interrupts delivered)", self.interrupts
        )?;
        writeln!(
            f,
            "  {:<24} {:>14}",
            "(user-process hand-offs)", self.handoffs
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
    fn a_tally_counts_a_name_once_whatever_its_address() {
        let mut t = Tally::default();
        let copy: &'static str = String::from("callout").leak();
        t.add("callout");
        t.add(copy);
        t.add("branch");
        t.add("callout");
        assert_eq!(t.total(), 4);
        assert_eq!(
            t.to_map().into_iter().collect::<Vec<_>>(),
            [("branch", 1), ("callout", 3)]
        );
    }

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
        let start = PhaseStart::now(&s, Stats::default(), MmuStats::default());
        s.phases.push(start.until(&start, Marker::Post(2)));
        s.phases
            .push(start.until(&start, Marker::Line("say \"hi\"\n".into())));
        let j = s.to_json();
        assert!(j.contains("\"exits\":{\"callout\":2}"), "{j}");
        assert!(j.contains("\"callouts\":{\"out\":1}"), "{j}");
        assert!(j.contains("\"inlined\":{\"cli\":3,\"pushf\":1}"), "{j}");
        assert!(j.contains("\"monitor\":0.005"), "{j}");
        assert!(j.contains("\"phases\":[{\"marker\":2,"), "{j}");
        let mut later = s.clone();
        later.callout("out");
        later.exit("callout");
        let now = PhaseStart::now(&later, Stats::default(), MmuStats::default());
        let p = start.until(&now, Marker::Exit).to_json();
        assert!(
            p.contains("\"exits_by\":{\"callout\":1},\"callouts_by\":{\"out\":1}"),
            "{p}"
        );
        assert!(
            j.contains("{\"mark\":\"say \\\"hi\\\"\\u000a\",\"cache\""),
            "{j}"
        );
        s.mmu.cr3_switches = 7;
        assert!(s.to_json().contains("\"cr3_switches\":7"));
        s.handoffs = 9;
        assert!(s.to_json().contains("\"handoffs\":9,\"mmu\""));
        assert!(s
            .to_string()
            .contains("(user-process hand-offs)              9"));
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
