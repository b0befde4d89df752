//! The translation cache (design.md section 4): where translated guest
//! kernel blocks live, how they are found, chained and invalidated.

pub mod block;
pub mod code;
pub mod lookup;
pub mod region;
pub mod stats;
