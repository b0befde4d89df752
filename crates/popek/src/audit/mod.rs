//! `popek audit`: the Popek-Goldberg view of a kernel. Decodes its 32-bit
//! code and counts the instructions a trap-and-emulate monitor would catch
//! (privileged) and those it would miss (sensitive but unprivileged), by
//! kind and by section.
//!
//! [`formats`] finds the code in a file, [`census`] counts it, [`report`]
//! presents the counts; this module ties them to the command line.

pub mod census;
pub mod formats;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args};

use census::Census;
use report::{Audit, SectionCensus};

/// Exit status for bad input, the same as `popek run`'s (see run.rs):
/// popek's own failures are even so they never look like a guest's exit.
const STATUS_POPEK_ERROR: u8 = 2;

/// Options of `popek audit`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["file", "guest"])))]
pub struct AuditArgs {
    /// A kernel: 32-bit ELF (vmlinux, multiboot), Linux bzImage, multiboot
    /// a.out-kludge image, or with --flat any raw 32-bit code.
    file: Option<PathBuf>,
    /// Audit an embedded guest instead of a file (see `popek guests`).
    #[arg(long, conflicts_with = "file")]
    guest: Option<String>,
    /// Decode the whole file as raw 32-bit code, whatever it looks like.
    #[arg(long)]
    flat: bool,
    /// Address of the first byte of a --flat file (hex with 0x, or decimal).
    #[arg(long, requires = "flat", value_parser = parse_address, default_value = "0x100000")]
    base: u64,
    /// Print one JSON object for scripts instead of the tables.
    #[arg(long)]
    json: bool,
}

/// Parses `0x...` hex or decimal.
fn parse_address(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not an address ({e}); write e.g. 0x100000"))
}

/// The bytes to audit and how to name them.
fn input(args: &AuditArgs) -> Result<(String, Vec<u8>), String> {
    if let Some(path) = &args.file {
        let data = std::fs::read(path)
            .map_err(|e| format!("cannot read kernel {}: {e}", path.display()))?;
        return Ok((path.display().to_string(), data));
    }
    let name = args.guest.as_deref().unwrap_or(popek_guests::DEFAULT);
    match popek_guests::find(name) {
        Some(g) => Ok((format!("embedded guest {name:?}"), g.image.to_vec())),
        None => {
            let names: Vec<_> = popek_guests::GUESTS.iter().map(|g| g.name).collect();
            Err(format!(
                "no embedded guest named {name:?}; the guests are: {}",
                names.join(", ")
            ))
        }
    }
}

/// Reads, decodes and counts; any failure is a message for the user.
pub fn audit_of(args: &AuditArgs) -> Result<Audit, String> {
    let (source, data) = input(args)?;
    let image = if args.flat {
        formats::flat(&data, args.base)
    } else {
        formats::detect(&data).map_err(|e| e.to_string())?
    };
    let sections = image
        .ranges
        .iter()
        .map(|r| SectionCensus {
            name: r.name.clone(),
            address: r.address,
            census: Census::sweep(&r.bytes, r.address, &r.starts),
        })
        .collect();
    Ok(Audit::new(source, image.format, sections))
}

/// Runs `popek audit` and returns the process exit status.
pub fn run(args: &AuditArgs) -> ExitCode {
    match audit_of(args) {
        Ok(audit) => {
            if args.json {
                print!("{}", report::json(&audit));
            } else {
                print!("{}", report::text(&audit));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("popek: {e}");
            ExitCode::from(STATUS_POPEK_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::formats::DEFAULT_FLAT_BASE;
    use super::*;

    #[test]
    fn addresses_parse_as_hex_or_decimal() {
        assert_eq!(parse_address("0x100000"), Ok(0x100000));
        assert_eq!(parse_address("0XC000_0000"), Ok(0xC000_0000));
        assert_eq!(parse_address("4096"), Ok(4096));
        assert!(parse_address("1M").unwrap_err().contains("not an address"));
        // --base's default is written as text for --help; keep it in step.
        assert_eq!(parse_address("0x100000"), Ok(DEFAULT_FLAT_BASE));
    }
}
