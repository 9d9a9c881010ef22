//! The WebAssembly plugin host (in progress).
