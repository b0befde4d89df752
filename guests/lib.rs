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

/// What a fetch script printed: its `NAME=PATH` lines.
#[derive(Clone, Debug)]
pub struct Fetched {
    script: String,
    vars: Vec<(String, String)>,
}

impl Fetched {
    /// The value printed for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value printed for `name`, or why there is none.
    pub fn need(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .map(str::to_string)
            .ok_or_else(|| format!("guests/{} printed no {name}", self.script))
    }
}

/// Runs one of this folder's fetch scripts (`linux/fetch`, Debian's
/// kernels and busybox; `qemu/fetch`, QEMU for the cross-checks: they
/// download into a cache outside the tree once, then only print) and
/// returns the `NAME=PATH` lines it printed. The scripts are found where
/// this crate was built, so only a popek run from its source tree has
/// them.
pub fn fetch(script: &str) -> Result<Fetched, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    if !path.exists() {
        return Err(format!(
            "{} is not here (run popek from its source tree)",
            path.display()
        ));
    }
    let out = std::process::Command::new("bash")
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "guests/{script} failed (are Debian's package registries reachable?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Fetched {
        script: script.to_string(),
        vars,
    })
}

/// `popek-bench`, the static i386 Linux program behind `popek bench`'s
/// Linux workloads, and the initramfs glue that puts it into Debian's
/// initrd.
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

    /// An uncompressed newc cpio archive holding `/init` (the shell script
    /// `init`) and [`GUEST_PATH`] (the program), both mode 0755, with the
    /// `/bin` directory entry and the `TRAILER!!!` that ends an archive.
    ///
    /// Linux unpacks every archive concatenated in the initrd, in order,
    /// and a later regular file replaces an earlier one of the same name,
    /// so this archive's `/init` takes over from the base initrd's.
    pub fn overlay_cpio(init: &str) -> Vec<u8> {
        let entries: [(&str, u32, &[u8]); 3] = [
            ("bin", 0o040755, &[]),
            ("init", 0o100755, init.as_bytes()),
            (&GUEST_PATH[1..], 0o100755, ELF),
        ];
        let mut archive = Vec::new();
        for (ino, (name, mode, data)) in (1..).zip(entries) {
            let directory = mode & 0o170000 == 0o040000;
            let builder = cpio::NewcBuilder::new(name)
                .ino(ino)
                .mode(mode)
                .nlink(if directory { 2 } else { 1 });
            let size = u32::try_from(data.len()).expect("a file under 4 GiB");
            let mut writer = builder.write(&mut archive, size);
            // Writing into a Vec cannot fail.
            std::io::Write::write_all(&mut writer, data).expect("write to memory");
            writer.finish().expect("write to memory");
        }
        cpio::newc::trailer(&mut archive).expect("write to memory");
        archive
    }

    /// `base` (an initrd, typically Debian's gzip-compressed one) followed
    /// by [`overlay_cpio`]`(init)`: zeros first pad `base` to a multiple of
    /// 4 bytes, since the kernel looks for the next archive's header only
    /// at such offsets (and skips zeros between archives).
    pub fn combined_initrd(base: &[u8], init: &str) -> Vec<u8> {
        let mut initrd = base.to_vec();
        initrd.resize(base.len().next_multiple_of(4), 0);
        initrd.extend_from_slice(&overlay_cpio(init));
        initrd
    }
}
