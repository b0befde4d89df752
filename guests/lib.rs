//! popek's own guests, built from the sources in this folder and embedded.
//!
//! `build.rs` compiles each guest with gcc -m32 and ld -m elf_i386 and
//! generates the `GUESTS` table included below.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// One embedded guest.
pub struct Guest {
    /// Name given to `--guest`.
    pub name: &'static str,
    /// One line saying what it checks.
    pub summary: &'static str,
    /// The kernel image.
    pub image: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The guest `popek run` boots with no argument.
pub const DEFAULT: &str = "demo";

/// Looks a guest up by name.
pub fn find(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

/// `popek-bench`, the static i386 Linux program behind `popek bench`'s
/// Linux workloads.
///
/// The same program runs natively as a host process and as a process of
/// Debian's kernel under popek or QEMU, so each workload's per-round cost
/// can be compared across the three. `popek-bench WORKLOAD [ROUNDS]
/// [extra]` prints one line,
/// `popek-bench NAME rounds=N cycles=TOTAL per_round=CYCLES_PER_ROUND`,
/// or `popek-bench NAME FAIL <reason>` and exits 1 (guests/linux/bench/
/// README.md).
pub mod linux_bench {
    /// One workload of the program.
    #[derive(Debug)]
    pub struct Workload {
        /// The program's first argument.
        pub name: &'static str,
        /// What one round is.
        pub summary: &'static str,
        /// The rounds it runs when not given ROUNDS: about 0.1 s natively.
        pub rounds: u32,
    }

    include!(concat!(env!("OUT_DIR"), "/linux_bench.rs"));

    /// Where the program lands in the guest's root file system.
    pub const GUEST_PATH: &str = "/bin/popek-bench";

    /// Looks a workload up by name.
    pub fn find(name: &str) -> Option<&'static Workload> {
        WORKLOADS.iter().find(|w| w.name == name)
    }
}
