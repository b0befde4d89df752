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

/// Every `--tc-size` the translation cache cannot have is refused by the
/// command line (status 2, one sentence), before any engine starts.
#[test]
fn bad_translation_cache_sizes_are_refused() {
    for size in ["0", "1K", "4097", "3148K", "4G", "lots"] {
        let run = popek(&["run", "--guest", "hello", "--tc-size", size]);
        assert_eq!(run.status, 2, "--tc-size {size}\n{}", run.show());
        assert!(
            run.stderr.contains(&format!("invalid value '{size}'")),
            "--tc-size {size}\n{}",
            run.show()
        );
        assert!(!run.stderr.contains("host error"), "{}", run.show());
        assert!(run.stdout.is_empty(), "no guest ran\n{}", run.show());
    }
    // The bounds themselves are sizes the cache can have.
    for size in ["4K", "3M"] {
        let run = popek(&["run", "--guest", "hello", "--tc-size", size]);
        assert_eq!(run.status, 1, "--tc-size {size}\n{}", run.show());
    }
}

/// A kernel or initrd that is not a regular file is refused before it is
/// read: a device would be read until memory runs out, a FIFO would block.
#[test]
fn kernel_and_initrd_must_be_regular_files() {
    let fifo = std::env::temp_dir().join(format!("popek-cli-{}-fifo", std::process::id()));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let fifo = fifo.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--kernel", "/dev/zero"],
            "the kernel /dev/zero is a device",
        ),
        (&["--kernel", fifo], "is a FIFO"),
        (&["--kernel", "/tmp"], "the kernel /tmp is a directory"),
        (
            &["--guest", "hello", "--initrd", "/dev/zero"],
            "the initrd /dev/zero is a device",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        let run = popek(&all);
        assert_eq!(run.status, 2, "{args:?}\n{}", run.show());
        assert!(run.stderr.contains(says), "{args:?}\n{}", run.show());
    }
    std::fs::remove_file(fifo).ok();
}

/// A file larger than guest RAM is refused from its size alone: a sparse
/// 1 GiB file costs nothing to check.
#[test]
fn a_kernel_larger_than_guest_ram_is_refused_unread() {
    let p = std::env::temp_dir().join(format!("popek-cli-{}-sparse", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let run = popek(&["run", "--kernel", p.to_str().unwrap(), "--memory", "64"]);
    std::fs::remove_file(&p).ok();
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr
            .contains("is 1073741824 bytes, more than the guest's 64 MiB of RAM can hold"),
        "{}",
        run.show()
    );
}
