//! TODO(helper): see crates/x86/src/lib.rs
