//! `popek bench`: a short run of the demo, nanobenchmark and sweep groups
//! writes JSON with every expected workload and field, and an SVG that is
//! well-formed XML holding every series. No figure is compared with a
//! target: speed lives in the benchmark's own output, not in tests.

mod common;

use common::popek;

/// The demo's steps and the nanobenchmarks the run must report.
const WORKLOADS: &[&str] = &[
    "demo/compute",
    "demo/forkwait",
    "demo/pipe",
    "demo/preempt",
    "nano/syscall",
    "nano/in",
    "nano/callret",
    "nano/pgfault",
    "nano/divzero",
    "nano/ptemod",
];

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("popek-bench-test-{}-{name}", std::process::id()))
}

#[test]
fn a_short_run_writes_the_table_json_and_svg() {
    let (json_path, svg_path) = (tmp("out.json"), tmp("out.svg"));
    let run = popek(&[
        "bench",
        "--quick",
        "--runs",
        "1",
        "--only",
        "demo,nano,sweep",
        "--json",
        json_path.to_str().unwrap(),
        "--svg",
        svg_path.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 0, "{}", run.show());
    assert!(
        run.stdout.starts_with("popek bench --quick"),
        "{}",
        run.show()
    );
    for w in WORKLOADS {
        assert!(
            run.stdout.contains(w),
            "no {w} in the table:\n{}",
            run.stdout
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let workloads = json["workloads"].as_array().expect("a workloads array");
    let find = |name: &str| {
        workloads
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json:#}"))
    };
    for name in WORKLOADS {
        let w = find(name);
        let bt = &w["runners"]["bt"];
        for field in ["min", "median", "max"] {
            let v = bt[field].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{name}: bt {field} = {v} in {w:#}");
        }
        assert_eq!(bt["n"], 1, "{w:#}");
        assert!(w["unit"].as_str().unwrap().starts_with("cycles/"), "{w:#}");
    }
    // CR8's 32-bit counterpart needs a local APIC: measured where the
    // machine has one, else the guest's reason is in the report.
    let cr8 = find("nano/cr8wr");
    match cr8["runners"]["bt"]["median"].as_f64() {
        Some(v) => assert!(v > 0.0, "{cr8:#}"),
        None => assert!(
            cr8["missing"]["bt"].as_str().unwrap().contains("n/a"),
            "{cr8:#}"
        ),
    }
    // bt's counters per demo step, from its --mark-lines phases.
    for step in ["demo/compute", "demo/forkwait"] {
        let tc = &find(step)["tc"];
        let rate = tc["hit_rate"].as_f64().unwrap();
        assert!(rate > 0.5 && rate <= 1.0, "{step}: {tc:#}");
        assert!(tc["blocks"].as_u64().unwrap() > 0, "{step}: {tc:#}");
        assert!(tc["exits"].as_u64().unwrap() > 0, "{step}: {tc:#}");
    }
    // The native side of the compute step runs popek-bench as an i386
    // process; a host without 32-bit support says so instead.
    let compute = find("demo/compute");
    match compute["runners"]["native"]["median"].as_f64() {
        Some(v) => {
            assert!(v > 0.0);
            assert!(compute["ratios"]["bt/native"].as_f64().unwrap() > 0.0);
        }
        None => eprintln!(
            "native compute not measured: {}",
            compute["missing"]["native"]
        ),
    }
    let sweep = json["sweep"].as_array().expect("a sweep array");
    let demo: Vec<_> = sweep.iter().filter(|p| p["workload"] == "demo").collect();
    assert_eq!(demo.len(), 3, "three sizes with --quick: {sweep:#?}");
    for p in &demo {
        assert!(p["seconds"].as_f64().unwrap() > 0.0, "{p:#}");
        assert!(p["tc"]["hit_rate"].as_f64().unwrap() > 0.5, "{p:#}");
    }

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    let mut want = vec!["demo", "demo/forkwait", "nano/syscall", "hit rate (%)"];
    if compute["ratios"]["bt/native"].is_number() {
        want.push("bt/native");
    }
    if find("demo/forkwait")["ratios"]["bt/qemu"].is_number() {
        want.push("bt/qemu");
    }
    for w in want {
        assert!(
            texts.contains(&w),
            "no {w:?} series or label in the SVG: {texts:?}"
        );
    }
    std::fs::remove_file(&json_path).ok();
    std::fs::remove_file(&svg_path).ok();
}

#[test]
fn an_unwritable_output_is_refused_before_anything_runs() {
    let run = popek(&["bench", "--json", "/nonexistent-dir/out.json"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr
            .contains("cannot write /nonexistent-dir/out.json"),
        "{}",
        run.show()
    );
    assert!(run.stdout.is_empty(), "{}", run.show());
}
