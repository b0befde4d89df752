//! The translator: decode a basic block of guest kernel code with iced-x86,
//! classify each instruction, copy the innocuous ones byte for byte (IDENT)
//! and rewrite the rest, emitting host code with dynasmrt.
//!
//! What each kind becomes:
//! - innocuous: copied verbatim; it runs on the guest's own shadow DS, ES,
//!   FS and SS, with the guest's arithmetic flags in the host EFLAGS. One
//!   that reached a device before ([`Translator::callout_at`]) becomes a
//!   callout instead.
//! - direct JMP, Jcc, LOOP, JECXZ, CALL: exits that the cache can chain
//!   straight to the target's translation. CALL pushes the *guest* return
//!   address, so the guest's stack never holds a host address.
//! - RET and indirect JMP/CALL: the target goes through the inline lookup
//!   table ([`crate::cache::lookup`]); a miss exits to the dispatcher.
//! - CLI, STI, POPF (32-bit operand size, CPL 0) and PUSHF (32-bit): a
//!   few inline instructions on the virtual CPU's flags in the vCPU area
//!   ([`Inline`](crate::contract::Inline); the sequences are in [`emit`]). STI and POPF leave
//!   translated code only when they open the window for an interrupt that
//!   is waiting, or set TF.
//! - everything else privileged or sensitive: a callout, i.e. an exit that
//!   makes the monitor carry out that one instruction on the virtual CPU
//!   (`x86::emulate`) and continue after it.
//!
//! A block ends at a control transfer, a callout, the guest page's end,
//! [`MAX_INSNS`] instructions or [`MAX_BLOCK_BYTES`] bytes of host code.
//!
//! [`Translator::translate`] only drives two halves: the decode loop
//! (`decode.rs`: the guest's instructions and the block ends that do not
//! depend on what they become) and the rewriting rules (`rules.rs`: what
//! each instruction becomes, and whether it ends the block), which emit
//! through [`emit`].

mod decode;
pub mod emit;
mod rules;
mod translation;

use crate::cache::{BlockKey, GuestPage};
use crate::contract::ExitReason;
use decode::{BlockDecoder, Step};
pub use decode::{MAX_BLOCK_BYTES, MAX_INSNS};
use emit::Emitter;
use rules::{Flow, Rewriter};

/// Whether `insn` under `ctx` is a data-segment load that translated code
/// does inline (borrowing EAX, ECX, EDX and EBX: see
/// `Emitter::load_sreg`).
pub fn loads_sreg_inline(insn: &iced_x86::Instruction, ctx: crate::cache::Context) -> bool {
    rules::inline_sreg_load(insn, ctx).is_some()
}
pub use translation::{TranslateError, Translation};

/// The most instructions [`Translator::callout_at`] keeps: a kernel has a
/// few dozen device-access sites, and a guest that faults on devices from
/// everywhere gets no more host memory for it.
const MAX_CALLOUT_SITES: usize = 4096;

/// Emits the translations of guest blocks.
#[derive(Clone, Debug)]
pub struct Translator {
    /// Host address of the shared indirect-branch miss handler.
    miss: u32,
    /// The guest's TSC is the host's (no offset): RDTSC in kernel code
    /// runs natively instead of as a callout.
    native_tsc: bool,
    /// Guest linear EIPs of data instructions translated as callouts: they
    /// reached a device (`Translator::callout_at`).
    callout_sites: rustc_hash::FxHashSet<u32>,
}

/// The shared miss handler's code, to install once below 4 GiB at `at`.
pub fn miss_handler(at: u32) -> Vec<u8> {
    let mut em = Emitter::new(at);
    em.miss_handler(ExitReason::IndirectMiss as u32);
    em.finish()
}

impl Translator {
    /// A translator whose indirect-branch misses go to `miss` (the address
    /// [`miss_handler`] was installed at).
    pub fn new(miss: u32) -> Translator {
        Translator {
            miss,
            native_tsc: true,
            callout_sites: Default::default(),
        }
    }

    /// Makes the data instruction at guest linear `eip` a callout in the
    /// translations made from now on: it reached a device, and each such
    /// access from copied code is a host fault (a signal, ~4 µs here),
    /// where a callout leaves through the exit stub (the adaptive
    /// translation of Adams and Agesen, ASPLOS 2006). Returns whether it
    /// was new; past `MAX_CALLOUT_SITES` (4,096) nothing is added.
    pub fn callout_at(&mut self, eip: u32) -> bool {
        self.callout_sites.len() < MAX_CALLOUT_SITES && self.callout_sites.insert(eip)
    }

    /// Whether translations copy RDTSC as it is (the guest's TSC is the
    /// host's); blocks made under the other setting must be dropped when
    /// it changes.
    pub fn native_tsc(&self) -> bool {
        self.native_tsc
    }

    /// Sets what [`Translator::native_tsc`] says.
    pub fn set_native_tsc(&mut self, native: bool) {
        self.native_tsc = native;
    }

    /// Translates the block at `key`. `code` holds the guest bytes from
    /// `key.eip` on (to the page end plus up to 15 bytes, so that a last
    /// instruction may straddle); `page` is the guest physical page of
    /// `key.eip`; the host code is emitted for host address `host`.
    pub fn translate(
        &self,
        key: BlockKey,
        code: &[u8],
        page: GuestPage,
        host: u32,
    ) -> Result<Translation, TranslateError> {
        let ctx = key.ctx;
        if !ctx.code32 {
            return Err(TranslateError::Unsupported {
                eip: key.eip,
                bytes: code.iter().take(8).copied().collect(),
                why: "16-bit code segments are not translated yet",
            });
        }
        let mut decoder = BlockDecoder::new(key, code, page);
        let mut rw = Rewriter::new(ctx, host, self.miss, self.native_tsc);
        // The previous instruction was an inline STI: the one in its
        // interrupt shadow stays in this block (see `Emitter::sti`).
        let mut hold = false;
        loop {
            let d = match decoder.next(rw.host_len(), hold)? {
                Step::Insn(d) => d,
                Step::End(at) => {
                    rw.fall_through(at);
                    break;
                }
            };
            match rw.rewrite(&d, self.callout_sites.contains(&d.linear))? {
                Flow::Next { .. } if d.straddles => {
                    rw.fall_through(d.next);
                    break;
                }
                Flow::Next { hold: h } => hold = h,
                Flow::End => break,
            }
        }
        Ok(rw.finish(key, page, decoder.spill(), decoder.guest_len()))
    }
}

#[cfg(test)]
mod tests;
