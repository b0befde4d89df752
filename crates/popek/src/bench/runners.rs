//! How each runner is started: popek itself (bt or kvm) as a child
//! process, since a run confines the process it runs in; QEMU TCG; a
//! native i386 program.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::measure::Runner;

/// The kernel a guest run boots.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// One of popek's embedded guests, by name.
    Embedded(&'static str),
    /// A kernel image file (Debian's bzImage).
    File(PathBuf),
}

/// One guest to boot, the same for every runner.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// What to boot.
    pub kernel: Kernel,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: String,
}

/// bt-only options of a popek run.
#[derive(Clone, Debug, Default)]
pub struct BtOptions {
    /// `--tc-size` in bytes.
    pub tc_size: Option<u32>,
    /// `--mark-lines`: console lines that end a statistics phase.
    pub mark_lines: Option<&'static str>,
    /// `--stats-json` file.
    pub stats_json: Option<PathBuf>,
}

/// The programs and places a benchmark run uses.
pub struct Tools {
    /// This popek binary.
    pub popek: PathBuf,
    /// qemu-system-i386, if found.
    pub qemu: Option<PathBuf>,
    /// A private scratch folder, removed at the end.
    pub tmp: PathBuf,
}

/// Guest RAM for every runner, popek's default.
const MEMORY_MIB: u64 = machine::machine::DEFAULT_MEMORY_MIB;

impl Tools {
    /// A popek run of `guest` under `engine` (bt or kvm).
    pub fn popek(&self, engine: Runner, guest: &GuestRun, opts: &BtOptions) -> Command {
        let mut cmd = Command::new(&self.popek);
        cmd.args(["run", "--engine", engine.name()]);
        cmd.args(["--memory", &MEMORY_MIB.to_string()]);
        match &guest.kernel {
            Kernel::Embedded(name) => cmd.args(["--guest", name]),
            Kernel::File(path) => cmd.arg("--kernel").arg(path),
        };
        if let Some(initrd) = &guest.initrd {
            cmd.arg("--initrd").arg(initrd);
        }
        cmd.args(["--append", &guest.append]);
        if engine == Runner::Bt {
            if let Some(size) = opts.tc_size {
                cmd.args(["--tc-size", &size.to_string()]);
            }
            if let Some(prefix) = opts.mark_lines {
                cmd.args(["--mark-lines", prefix]);
            }
            if let Some(path) = &opts.stats_json {
                cmd.arg("--stats-json").arg(path);
            }
        }
        cmd
    }

    /// A QEMU TCG run of `guest` on a machine like popek's: no network,
    /// no display, COM1 on stdout, the debug-exit port at 0xF4. `None` if
    /// no QEMU was found.
    pub fn qemu(&self, guest: &GuestRun) -> std::io::Result<Option<Command>> {
        let Some(qemu) = &self.qemu else {
            return Ok(None);
        };
        let kernel = match &guest.kernel {
            Kernel::File(path) => path.clone(),
            Kernel::Embedded(name) => self.embedded_file(name)?,
        };
        let mut cmd = Command::new(qemu);
        cmd.args(["-accel", "tcg", "-m", &MEMORY_MIB.to_string()]);
        cmd.args(["-nodefaults", "-display", "none", "-serial", "stdio"]);
        cmd.args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ]);
        cmd.arg("-kernel").arg(kernel);
        if let Some(initrd) = &guest.initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        cmd.args(["-append", &guest.append]);
        Ok(Some(cmd))
    }

    /// An embedded guest's image as a file, for QEMU's -kernel.
    fn embedded_file(&self, name: &str) -> std::io::Result<PathBuf> {
        let path = self.tmp.join(format!("{name}.elf"));
        if !path.exists() {
            let g = popek_guests::find(name).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("no guest {name}"))
            })?;
            std::fs::write(&path, g.image)?;
        }
        Ok(path)
    }

    /// An executable file of `bytes` in the scratch folder, written on
    /// first use (every native run of a bench uses the same program).
    pub fn executable(&self, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.tmp.join(name);
        if path.exists() {
            return Ok(path);
        }
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

/// `qemu-system-i386`: the one on PATH, else Debian's through
/// guests/qemu/fetch (fetched once, cached) when popek runs from its source
/// tree; why not, if neither.
pub fn find_qemu() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("qemu-system-i386"))
            .find(|p| is_executable(p))
    });
    if let Some(q) = on_path {
        return Ok(q);
    }
    popek_guests::fetch("qemu/fetch")
        .map_err(|e| format!("qemu-system-i386 is not on PATH (install qemu-system-x86), and {e}"))?
        .need("QEMU")
        .map(PathBuf::from)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
