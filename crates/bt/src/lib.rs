//! The binary-translation engine.
