//! The shadow MMU end to end: self-verifying paging guests pass under the
//! BT engine, and the MMU counters in `--stats-json` say what happened.

mod common;

use common::{assert_pass, popek, qemu, Run};

fn run_bt(guest: &str, extra: &[&str]) -> Run {
    let mut args = vec!["run", "--engine", "bt", "--guest", guest];
    args.extend_from_slice(extra);
    popek(&args)
}

/// The value of `"key":<number>` in the `"mmu"` object of a stats JSON.
fn mmu_field(json: &str, key: &str) -> u64 {
    let mmu = &json[json.find("\"mmu\":{").expect("an mmu object")..];
    let at = mmu.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    mmu[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

#[test]
fn paging_guest_passes_under_bt() {
    let run = run_bt("paging", &[]);
    let checks = assert_pass(&run);
    assert!(checks > 150, "{checks} checks\n{}", run.show());
    // The emulator keeps its page walks from one callout to the next
    // (machine/memory.rs `WalkCache`): a store it makes after a remap and
    // a flush lands in the new frame.
    for line in [
        "ok   PTE pointed at frame B + INVLPG: SIDT stores in frame B",
        "ok   PTE pointed at frame C + CR3 rewritten: SIDT stores in frame C",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.show());
    }
}

#[test]
fn paging_guest_passes_under_qemu_tcg_with_the_same_checks() {
    // What the guest checks is the architecture's, not popek's: among
    // them a hot INT 0x80 that popek runs as int3 from a frame copy,
    // rewritten by the kernel and through a user alias, and the #GP(0x402)
    // it raises once its gate is DPL 0.
    let q = qemu("paging", "");
    let checks = assert_pass(&q);
    let bt = assert_pass(&run_bt("paging", &[]));
    assert_eq!(checks, bt, "{}", q.show());
}

#[test]
fn pae_guest_passes_under_bt() {
    let run = run_bt("pae", &[]);
    let checks = assert_pass(&run);
    assert!(checks > 80, "{checks} checks\n{}", run.show());
}

#[test]
fn paging_statistics_count_hidden_and_delivered_faults() {
    let dir = std::env::temp_dir().join(format!("popek-mmu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("paging.json");
    let run = run_bt("paging", &["--stats-json", path.to_str().unwrap()]);
    assert_pass(&run);
    let json = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    // The guest checks 20-odd #PFs of its own; the shadow absorbs others.
    assert!(mmu_field(&json, "page_faults_delivered") >= 20, "{json}");
    assert!(mmu_field(&json, "shadow_faults_hidden") > 0, "{json}");
    assert!(
        mmu_field(&json, "pages_mapped") >= mmu_field(&json, "mapping_calls"),
        "{json}"
    );
    // Code protection and the user view's switches cover at least a page
    // each.
    assert!(
        mmu_field(&json, "pages_protected") >= mmu_field(&json, "protection_calls"),
        "{json}"
    );
    // It switches between two page directories and toggles PG and PSE.
    assert!(mmu_field(&json, "cr3_switches") >= 1, "{json}");
    assert!(mmu_field(&json, "full_flushes") >= 2, "{json}");
    // Its hot INT 0x80 on a read-only user page ran as int3 from a frame
    // copy, and each rewrite of the page (by its kernel, by user code
    // through a writable alias, by its kernel again) dropped the copy
    // (the guest checks that the new code ran). Then 66 frames, one
    // after another at one address, each got a copy: the last two only
    // once the copies of two frames no user page mapped any more were
    // given up (64 slots).
    assert_eq!(
        mmu_field(&json, "int_0x80_sites_run_as_int3"),
        3 + 66,
        "{json}"
    );
    assert_eq!(mmu_field(&json, "frame_copies_dropped"), 3 + 2, "{json}");
}

#[test]
fn without_the_int80_patch_every_int_0x80_takes_the_host_s_path() {
    let json = paging_stats("no-patch", &["--no-int80-patch"]);
    assert_eq!(mmu_field(&json, "int_0x80_sites_run_as_int3"), 0, "{json}");
    assert_eq!(mmu_field(&json, "frame_copies_dropped"), 0, "{json}");
}

/// The paging guest's MMU counters from `--stats-json`, run with `extra`.
fn paging_stats(name: &str, extra: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("popek-mmu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("paging.json");
    let mut args = vec!["--stats-json", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = run_bt("paging", &args);
    assert_pass(&run);
    let json = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    json
}

#[test]
fn user_code_in_its_own_process_needs_no_view_switches() {
    // The default: guest user code runs in a process that only ever has
    // the user view, so no page is re-protected at a user/kernel switch.
    let json = paging_stats("split", &[]);
    assert_eq!(mmu_field(&json, "view_switches"), 0, "{json}");
    assert!(mmu_field(&json, "shadow_faults_hidden") > 0, "{json}");
}

#[test]
fn dropped_pages_are_hidden_and_user_pages_follow_cr3_only_with_a_user_process() {
    // With the user-code process, dropped pages stay behind PROT_NONE and
    // come back by mprotect when their frame does (INVLPG of a page read
    // again); user pages kept over a CR3 switch move to the frame an
    // accessed entry of the new directory gives them. The guest checks
    // what ring 3 then reads and gets.
    let json = paging_stats("hide", &[]);
    assert!(mmu_field(&json, "hiding_calls") > 0, "{json}");
    assert!(mmu_field(&json, "hidden_pages_shown_again") > 0, "{json}");
    assert!(mmu_field(&json, "remapped_at_cr3_switches") > 0, "{json}");
    // One process has one view to keep right: it unmaps, as before.
    let json = paging_stats("nohide", &["--one-process"]);
    assert_eq!(mmu_field(&json, "hiding_calls"), 0, "{json}");
    assert_eq!(mmu_field(&json, "remapped_at_cr3_switches"), 0, "{json}");
}

#[test]
fn one_process_mode_still_passes_with_view_switches() {
    // `--one-process`: the user view is made by re-protecting the
    // supervisor pages at every switch, as before the user-code process.
    let json = paging_stats("one", &["--one-process"]);
    assert!(mmu_field(&json, "view_switches") > 0, "{json}");
    assert!(
        mmu_field(&json, "pages_protected") >= mmu_field(&json, "protection_calls"),
        "{json}"
    );
}
