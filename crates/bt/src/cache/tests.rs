//! Tests of the translation cache's indexes, chaining and invalidation.
