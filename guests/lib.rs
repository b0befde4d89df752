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
