//! Unit tests of the executor through the fake runtime.
