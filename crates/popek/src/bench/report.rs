//! The results of a benchmark run as a table for people and as JSON for
//! scripts; both come from the same [`Report`].

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::measure::{Runner, Summary, SweepPoint, TcCounters, Workload};

/// Everything one `popek bench` run found.
pub struct Report<'a> {
    /// Repetitions of each measurement.
    pub runs: usize,
    /// Whether it was a `--quick` run.
    pub quick: bool,
    /// Per-workload results, in the order they were first measured.
    pub workloads: &'a [Workload],
    /// The translation-cache size sweep.
    pub sweep: &'a [SweepPoint],
    /// Remarks for the reader (what could not run, and why).
    pub notes: &'a [String],
    /// How long the run took.
    pub elapsed: Duration,
}

/// The runners bt is compared with, as ratio columns.
const BASELINES: [Runner; 3] = [Runner::Native, Runner::Qemu, Runner::Kvm];

/// A number with as many digits as its size deserves.
fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ({}..{})", num(s.median), num(s.min), num(s.max)),
        Some(s) => num(s.median),
        None => "-".into(),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

/// The host CPU's model name, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

impl Report<'_> {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "popek bench{}: {} run(s) per figure, {:.0} s, on {}",
            if self.quick { " --quick" } else { "" },
            self.runs,
            self.elapsed.as_secs_f64(),
            cpu_model()
        );
        let _ = writeln!(
            t,
            "median (min..max); ratios are bt's median over the other runner's (lower is better for bt)\n"
        );
        let _ = writeln!(
            t,
            "{:<22} {:<17} {:>26} {:>26} {:>26} {:>26} {:>9} {:>9} {:>9}",
            "workload", "unit", "bt", "kvm", "qemu", "native", "bt/native", "bt/qemu", "bt/kvm"
        );
        for w in self.workloads {
            let _ = write!(t, "{:<22} {:<17}", w.name, w.unit);
            for r in Runner::ALL {
                let _ = write!(t, " {:>26}", cell(w.summary(r)));
            }
            for base in BASELINES {
                let _ = write!(
                    t,
                    " {:>9}",
                    w.ratio(base).map_or("-".into(), |x| format!("{x:.2}x"))
                );
            }
            t.push('\n');
        }

        let with_tc: Vec<_> = self
            .workloads
            .iter()
            .filter_map(|w| w.tc.as_ref().map(|tc| (w, tc)))
            .collect();
        if !with_tc.is_empty() {
            let _ = writeln!(
                t,
                "\ntranslation cache under bt (first run of each workload)"
            );
            let _ = writeln!(
                t,
                "{:<22} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10}",
                "workload",
                "hit rate",
                "blocks",
                "chained",
                "unchained",
                "evictions",
                "smc",
                "exits",
                "callouts"
            );
            for (w, tc) in with_tc {
                let _ = writeln!(
                    t,
                    "{:<22} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10}",
                    w.name,
                    pct(tc.hit_rate),
                    tc.blocks,
                    tc.chained,
                    tc.unchained,
                    tc.evictions,
                    tc.smc_invalidations,
                    tc.exits,
                    tc.callouts
                );
            }
        }

        let cold: Vec<_> = self
            .workloads
            .iter()
            .filter_map(|w| Some((w, *w.cold.get(&Runner::Bt)?, w.summary(Runner::Bt)?)))
            .collect();
        if !cold.is_empty() {
            let _ = writeln!(
                t,
                "\ncold against warm under bt (first run in a boot against the median of the repeats)"
            );
            for (w, first, warm) in cold {
                let _ = writeln!(
                    t,
                    "{:<22} cold {:>12}  warm {:>12}  {:.2}x",
                    w.name,
                    num(first),
                    num(warm.median),
                    first / warm.median
                );
            }
        }

        if !self.sweep.is_empty() {
            let _ = writeln!(
                t,
                "\ntranslation-cache size sweep under bt (one run per size)"
            );
            let _ = writeln!(
                t,
                "{:<12} {:>8} {:>9} {:>9} {:>9} {:>9}",
                "workload", "tc size", "time s", "hit rate", "blocks", "evictions"
            );
            for p in self.sweep {
                let _ = writeln!(
                    t,
                    "{:<12} {:>7}K {:>9.3} {:>9} {:>9} {:>9}",
                    p.workload,
                    p.tc_size / 1024,
                    p.seconds,
                    pct(p.tc.hit_rate),
                    p.tc.blocks,
                    p.tc.evictions
                );
            }
        }

        let missing: Vec<_> = self
            .workloads
            .iter()
            .flat_map(|w| w.missing.iter().map(move |(r, why)| (w, r, why)))
            .filter(|(w, r, _)| w.summary(**r).is_none())
            .collect();
        if !missing.is_empty() || !self.notes.is_empty() {
            let _ = writeln!(t, "\nnot measured, and notes");
            for (w, r, why) in missing {
                // The reasons a runner cannot run a whole group are notes.
                if !self.notes.iter().any(|n| n.contains(why.as_str())) {
                    let _ = writeln!(t, "  {} under {r}: {why}", w.name);
                }
            }
            for n in self.notes {
                let _ = writeln!(t, "  {n}");
            }
        }
        t
    }

    /// The whole report as JSON.
    pub fn json(&self) -> String {
        let summary =
            |s: Summary| json!({"min": s.min, "median": s.median, "max": s.max, "n": s.n});
        let workloads: Vec<Value> = self
            .workloads
            .iter()
            .map(|w| {
                let mut runners = serde_json::Map::new();
                for r in Runner::ALL {
                    if let Some(s) = w.summary(r) {
                        let mut v = summary(s);
                        v["samples"] = json!(w.samples[&r]);
                        if let Some(c) = w.cold.get(&r) {
                            v["cold"] = json!(c);
                        }
                        runners.insert(r.name().into(), v);
                    }
                }
                let mut ratios = serde_json::Map::new();
                for base in BASELINES {
                    if let Some(x) = w.ratio(base) {
                        ratios.insert(format!("bt/{base}"), json!(x));
                    }
                }
                let missing: serde_json::Map<String, Value> = w
                    .missing
                    .iter()
                    .filter(|(r, _)| w.summary(**r).is_none())
                    .map(|(r, why)| (r.name().to_string(), json!(why)))
                    .collect();
                json!({
                    "name": w.name,
                    "unit": w.unit,
                    "runners": runners,
                    "ratios": ratios,
                    "missing": missing,
                    "tc": w.tc.as_ref().map(tc_json),
                })
            })
            .collect();
        let sweep: Vec<Value> = self
            .sweep
            .iter()
            .map(|p| {
                json!({
                    "workload": p.workload,
                    "tc_size": p.tc_size,
                    "seconds": p.seconds,
                    "tc": tc_json(&p.tc),
                })
            })
            .collect();
        let v = json!({
            "popek": env!("CARGO_PKG_VERSION"),
            "host_cpu": cpu_model(),
            "quick": self.quick,
            "runs": self.runs,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "workloads": workloads,
            "sweep": sweep,
            "notes": self.notes,
        });
        serde_json::to_string_pretty(&v).expect("JSON values serialise") + "\n"
    }
}

fn tc_json(tc: &TcCounters) -> Value {
    json!({
        "hit_rate": tc.hit_rate,
        "blocks": tc.blocks,
        "chained": tc.chained,
        "unchained": tc.unchained,
        "evictions": tc.evictions,
        "smc_invalidations": tc.smc_invalidations,
        "exits": tc.exits,
        "callouts": tc.callouts,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small report: two workloads, one runner missing, two sweep points.
    pub(crate) fn sample() -> (Vec<Workload>, Vec<SweepPoint>, Vec<String>) {
        let mut a = Workload::new("demo/forkwait", "cycles/round");
        a.samples.insert(Runner::Bt, vec![300.0, 100.0, 200.0]);
        a.samples.insert(Runner::Qemu, vec![100.0]);
        a.missing.insert(Runner::Kvm, "no paging on kvm-pvm".into());
        a.tc = Some(TcCounters {
            hit_rate: Some(0.99),
            blocks: 10,
            ..TcCounters::default()
        });
        let mut b = Workload::new("linux/syscall", "cycles/round");
        b.samples.insert(Runner::Bt, vec![2.0, 4.0]);
        b.samples.insert(Runner::Native, vec![1.0, 1.0]);
        b.cold.insert(Runner::Bt, 9.0);
        let sweep = [64, 128]
            .map(|k| SweepPoint {
                workload: "demo".into(),
                tc_size: k * 1024,
                seconds: 1.0 / f64::from(k),
                tc: TcCounters {
                    hit_rate: Some(0.9),
                    evictions: 128 / u64::from(k),
                    ..TcCounters::default()
                },
            })
            .to_vec();
        (vec![a, b], sweep, vec!["a note".into()])
    }

    #[test]
    fn table_and_json_carry_the_same_figures() {
        let (w, s, n) = sample();
        let r = Report {
            runs: 3,
            quick: true,
            workloads: &w,
            sweep: &s,
            notes: &n,
            elapsed: Duration::from_secs(7),
        };
        let t = r.table();
        assert!(t.contains("200.0 (100.0..300.0)"), "{t}");
        assert!(t.contains("2.00x"), "bt/qemu of forkwait: {t}");
        assert!(t.contains("3.00x"), "bt/native of syscall: {t}");
        assert!(t.contains("99.00%"), "{t}");
        assert!(
            t.contains("cold         9.00  warm         3.00  3.00x"),
            "{t}"
        );
        assert!(
            t.contains("demo/forkwait under kvm: no paging on kvm-pvm"),
            "{t}"
        );
        assert!(t.contains("      128K"), "{t}");
        let j: Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["workloads"][0]["runners"]["bt"]["median"], 200.0);
        assert_eq!(j["workloads"][0]["ratios"]["bt/qemu"], 2.0);
        assert_eq!(j["workloads"][0]["missing"]["kvm"], "no paging on kvm-pvm");
        assert_eq!(j["workloads"][1]["runners"]["bt"]["cold"], 9.0);
        assert_eq!(j["sweep"][1]["tc_size"], 128 * 1024);
        assert_eq!(j["sweep"][0]["tc"]["evictions"], 2);
        assert_eq!(j["notes"][0], "a note");
    }
}
