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
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap();
    assert!(line.ends_with("(default)"), "{line}");
}

#[test]
fn popek_alone_runs_the_default_guest() {
    let run = popek(&[]);
    assert!(
        run.stdout.starts_with("hello from a popek guest"),
        "{}",
        run.show()
    );
    common::assert_pass(&run);
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
