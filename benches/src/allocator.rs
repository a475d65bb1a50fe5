//! The global allocator of the benchmark binaries, and its name for the report.
//!
//! `make bench` builds with the `jemalloc` feature: both sides of every scenario then allocate
//! through jemalloc, as a production service usually does. glibc's malloc, the default, spends
//! much of an activation-heavy run consolidating free lists (`_int_malloc`, `unlink_chunk` and
//! `malloc_consolidate` were about 30 % of the samples of a promotion-heavy profile) and
//! would mostly measure itself. mimalloc was tried too: as fast on commands, but its page
//! purging refaulted freed pages (`clear_page_erms` about 20 % of samples) when a batch of
//! actors stopped and the next one started. Without the feature (what `cargo test` and clippy
//! build) the binaries use the system allocator and jemalloc's C sources are not compiled.

/// The allocator type: jemalloc with the `jemalloc` feature.
#[cfg(feature = "jemalloc")]
pub type Allocator = tikv_jemallocator::Jemalloc;

/// The allocator type: the system allocator without the `jemalloc` feature.
#[cfg(not(feature = "jemalloc"))]
pub type Allocator = std::alloc::System;

/// The allocator's name, for the report.
pub const NAME: &str = if cfg!(feature = "jemalloc") {
    "jemalloc (tikv-jemallocator 0.6), for ours and every baseline"
} else {
    "the system allocator (glibc malloc), for ours and every baseline"
};
