//! What translating a block yields: the host code with its record, or
//! why the block could not be translated.

use crate::cache::NewBlock;

/// Why a block could not be translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The translator has no rewrite for this instruction in this context.
    Unsupported {
        /// Linear address of the instruction.
        eip: u32,
        /// Its bytes.
        bytes: Vec<u8>,
        /// What is missing.
        why: &'static str,
    },
    /// The guest bytes end inside the first instruction.
    Truncated {
        /// Linear address of the instruction.
        eip: u32,
    },
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslateError::Unsupported { eip, bytes, why } => {
                write!(f, "cannot translate the instruction at {eip:#010x} (")?;
                for (i, b) in bytes.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(f, "{sep}{b:02x}")?;
                }
                write!(f, "): {why}")
            }
            TranslateError::Truncated { eip } => {
                write!(f, "guest code at {eip:#010x} runs past the end of memory")
            }
        }
    }
}

impl std::error::Error for TranslateError {}

/// A translated block, ready for [`crate::cache::TranslationCache::insert`].
#[derive(Clone, Debug)]
pub struct Translation {
    /// The record: key, pages, precise-state table, chainable exits.
    pub block: NewBlock,
    /// Host code, emitted for the host address it was asked for.
    pub code: Vec<u8>,
}
