//! Benchmark tools for hookd; the binaries are in `src/bin/`.
