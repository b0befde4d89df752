//! The command line's answers to bad input: each names the problem and
//! exits with popek's own (even) status, never one a guest could produce.

mod common;

use common::popek;

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("popek-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn guests_lists_the_default_guest() {
    let run = popek(&["guests"]);
    assert_eq!(run.status, 0);
    let line = run.stdout.lines().find(|l| l.starts_with("demo ")).unwrap();
    assert!(line.ends_with("(default)"), "{line}");
}

/// `popek` alone boots the demo OS under bt: every step of init's script
/// passes, the kernel's own accounting is printed, the run ends with the
/// statistics table and the process exits 0.
#[test]
fn popek_alone_boots_the_demo_os() {
    let run = popek(&[]);
    assert_eq!(run.status, 0, "{}", run.show());
    let out = &run.stdout;
    for step in ["compute", "forkwait", "pipe"] {
        assert!(
            out.contains(&format!("init: step {step}\n")),
            "{step}\n{}",
            run.show()
        );
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{step}:")))
            .unwrap_or_else(|| panic!("no {step} line\n{}", run.show()));
        assert!(line.contains(" ok"), "{line}");
    }
    assert!(
        out.contains("forkwait: 1000 fork+wait rounds, children's pids and exit statuses ok"),
        "{}",
        run.show()
    );
    assert!(
        out.contains("init: summary: compute ok, forkwait ok, pipe ok"),
        "{}",
        run.show()
    );
    assert!(out.contains("init: no memory leaked"), "{}", run.show());
    assert!(out.contains("demo: all steps passed\n"), "{}", run.show());
    assert!(!out.contains("FAIL"), "{}", run.show());
    // The statistics table closes the run.
    for section in [
        "translation cache",
        "shadow mmu",
        "cr3 switches",
        "direct execution",
    ] {
        assert!(run.stderr.contains(section), "{section}\n{}", run.show());
    }
}

#[test]
fn missing_kernel_file_is_named() {
    let run = popek(&["run", "--kernel", "/nonexistent/vmlinuz"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr
            .contains("cannot read kernel /nonexistent/vmlinuz"),
        "{}",
        run.show()
    );
}

#[test]
fn unknown_guest_lists_the_known_ones() {
    let run = popek(&["run", "--guest", "nosuch"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr.contains("no embedded guest named \"nosuch\""),
        "{}",
        run.show()
    );
    assert!(run.stderr.contains("hello"), "{}", run.show());
}

#[test]
fn an_image_in_no_known_format_is_refused() {
    let p = temp_file("garbage", &[0x5A; 16384]);
    let run = popek(&["run", "--engine", "kvm", "--kernel", p.to_str().unwrap()]);
    std::fs::remove_file(&p).ok();
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(run.stderr.contains("multiboot"), "{}", run.show());
}

#[test]
fn bad_memory_size_is_refused() {
    let run = popek(&["run", "--engine", "kvm", "--memory", "0"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(run.stderr.contains("guest RAM size"), "{}", run.show());
}
