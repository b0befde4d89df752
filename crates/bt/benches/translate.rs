//! Translation throughput: every block start of an embedded guest's code,
//! translated into a throwaway buffer, in guest instructions per second.
//!
//! Block starts are found the way the engine meets them: from the ELF
//! entry, each block's fall-through end and every direct branch target,
//! until no new start inside .text appears (following fall-through past a
//! RET also reaches functions only called indirectly). Translation
//! needs no monitor (only a host address to emit for), so this runs on any
//! x86-64 host.
//!
//! `cargo bench -p popek-bt --bench translate`

use std::collections::{BTreeSet, VecDeque};
use std::hint::black_box;
use std::time::Duration;

use bt::cache::{BlockKey, Context, GuestPage};
use bt::translate::Translator;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use object::{Object, ObjectSection};

/// Host address the blocks are emitted for; arbitrary, nothing runs there.
const HOST: u32 = 0x1000_0000;
/// Host address of the miss handler; arbitrary as well.
const MISS: u32 = 0x0FFF_0000;

/// The guests whose code is translated.
const GUESTS: &[&str] = &["hello", "sensitive", "tc"];

const CTX: Context = Context {
    cs_base: 0,
    cpl: 0,
    code32: true,
    paging: false,
    step: false,
};

/// One guest's code: executable bytes from `base`, and the block starts.
struct Corpus {
    base: u32,
    bytes: Vec<u8>,
    starts: Vec<u32>,
    insns: u64,
}

impl Corpus {
    fn code_at(&self, eip: u32) -> &[u8] {
        let at = (eip - self.base) as usize;
        &self.bytes[at..(at + 4096 + 15).min(self.bytes.len())]
    }

    fn new(name: &str) -> Corpus {
        let guest = popek_guests::find(name).expect("embedded guest");
        // The embedded bytes may be unaligned; object wants the headers
        // aligned, and a heap copy is.
        let image = guest.image.to_vec();
        let file = object::File::parse(&*image).expect("guest ELF");
        // The guest's .text: code only, not the data the same segment holds.
        let text = file.section_by_name(".text").expect("a .text section");
        let lo = text.address() as u32;
        let bytes = text.data().expect(".text bytes").to_vec();
        let mut corpus = Corpus {
            base: lo,
            bytes,
            starts: Vec::new(),
            insns: 0,
        };
        let end = lo + corpus.bytes.len() as u32;
        let tr = Translator::new(MISS);
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([file.entry() as u32]);
        while let Some(eip) = queue.pop_front() {
            if eip < lo || eip >= end || !seen.insert(eip) {
                continue;
            }
            let Ok(t) = tr.translate(
                BlockKey { eip, ctx: CTX },
                corpus.code_at(eip),
                GuestPage(eip >> 12),
                HOST,
            ) else {
                continue; // data or something the translator refuses
            };
            corpus.starts.push(eip);
            corpus.insns += t.block.insns.len() as u64;
            queue.push_back(eip + t.block.guest_len);
            queue.extend(t.block.exits.iter().map(|&(target, _)| target));
        }
        corpus
    }
}

fn translate_guests(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let tr = Translator::new(MISS);
    for name in GUESTS {
        let corpus = Corpus::new(name);
        group.throughput(Throughput::Elements(corpus.insns));
        group.bench_function(
            format!(
                "{name} ({} blocks, {} insns)",
                corpus.starts.len(),
                corpus.insns
            ),
            |b| {
                b.iter(|| {
                    for &eip in &corpus.starts {
                        let t = tr.translate(
                            BlockKey { eip, ctx: CTX },
                            corpus.code_at(eip),
                            GuestPage(eip >> 12),
                            HOST,
                        );
                        black_box(t.expect("translated before"));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, translate_guests);
criterion_main!(benches);
