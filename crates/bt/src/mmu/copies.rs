//! Which guest frames the user-code process runs from a copy, in which
//! slot of the monitor's frame copies, and which `int $0x80` sites each
//! copy has turned into `int3` (see [`super::Shadow::patch_int80`]).

use rustc_hash::FxHashMap;

use crate::monitor::frame_copies::SLOTS;

/// One copied frame.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Copy {
    slot: u32,
    /// Offsets in the frame of the patched `int $0x80`s.
    sites: Vec<u16>,
}

/// The copied frames, by physical page number, and the free slots.
#[derive(Clone, Debug)]
pub(super) struct Copies {
    frames: FxHashMap<u32, Copy>,
    free: Vec<u32>,
}

impl Default for Copies {
    fn default() -> Copies {
        Copies {
            frames: FxHashMap::default(),
            free: (0..SLOTS).rev().collect(),
        }
    }
}

impl Copies {
    /// The slot of physical page `phys`'s copy, if it has one.
    pub fn slot(&self, phys: u32) -> Option<u32> {
        self.frames.get(&phys).map(|c| c.slot)
    }

    /// Whether no frame has a copy.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether `offset` of `phys` is a patched site.
    pub fn has_site(&self, phys: u32, offset: u16) -> bool {
        self.frames
            .get(&phys)
            .is_some_and(|c| c.sites.contains(&offset))
    }

    /// Notes the site `offset` of `phys`: its slot, and whether the copy is
    /// new (to be filled and mapped); None when every slot is taken.
    pub fn add_site(&mut self, phys: u32, offset: u16) -> Option<(u32, bool)> {
        if let Some(c) = self.frames.get_mut(&phys) {
            if !c.sites.contains(&offset) {
                c.sites.push(offset);
            }
            return Some((c.slot, false));
        }
        let slot = self.free.pop()?;
        self.frames.insert(
            phys,
            Copy {
                slot,
                sites: vec![offset],
            },
        );
        Some((slot, true))
    }

    /// Forgets `phys`'s copy and frees its slot; says whether it had one.
    pub fn remove(&mut self, phys: u32) -> bool {
        match self.frames.remove(&phys) {
            Some(c) => {
                self.free.push(c.slot);
                true
            }
            None => false,
        }
    }

    /// The frames that have a copy.
    pub fn frames(&self) -> impl Iterator<Item = u32> + '_ {
        self.frames.keys().copied()
    }

    /// Forgets every copy.
    pub fn clear(&mut self) {
        *self = Copies::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_share_their_frame_s_slot_and_a_removed_frame_frees_it() {
        let mut c = Copies::default();
        let (a, new) = c.add_site(0x100, 0x20).unwrap();
        assert!(new);
        assert_eq!(c.add_site(0x100, 0x40), Some((a, false)));
        assert_eq!(c.add_site(0x100, 0x40), Some((a, false)));
        assert!(c.has_site(0x100, 0x20) && c.has_site(0x100, 0x40));
        assert!(!c.has_site(0x100, 0x21) && !c.has_site(0x101, 0x20));
        let (b, new) = c.add_site(0x200, 0).unwrap();
        assert!(new && b != a);
        assert!(c.remove(0x100));
        assert!(!c.remove(0x100));
        assert_eq!(c.slot(0x100), None);
        assert_eq!(c.slot(0x200), Some(b));
        assert_eq!(c.add_site(0x300, 0), Some((a, true)));
    }

    #[test]
    fn no_copy_once_every_slot_is_taken() {
        let mut c = Copies::default();
        for p in 0..SLOTS {
            assert!(c.add_site(p, 0).is_some());
        }
        assert_eq!(c.add_site(SLOTS, 0), None);
        // A frame that has one still takes new sites.
        assert_eq!(c.add_site(0, 2).map(|(_, new)| new), Some(false));
        c.clear();
        assert!(c.is_empty());
        assert!(c.add_site(SLOTS, 0).is_some());
    }
}
