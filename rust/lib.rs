//! webli-io's Rust core: a pipeline of small stages that turns WebDataset shards of image–text
//! pairs into ready-to-train batches.
//!
//! ```text
//! source ──► tar ──► sample ──► (select, rebalance: later) ──► decode ──► resize ──► batch
//! ```
//!
//! Each stage is a module that takes and gives plain Rust types, so it is tested with
//! `cargo test` without Python; [`pipeline`] runs the stages on threads with bounded channels and
//! keeps the output order deterministic; `python.rs` (feature `python`) is the only file that
//! knows PyO3.

pub mod batch;
pub mod cache;
pub mod config;
pub mod decode;
pub mod fingerprint;
pub mod index;
pub mod lang;
pub mod names;
pub mod neardup;
pub mod objstore;
pub mod pipeline;
pub mod rebalance;
pub mod remote;
pub mod resize;
pub mod rng;
pub mod sample;
pub mod select;
pub mod source;
pub mod stats;
#[cfg(feature = "python")]
pub mod table;
pub mod tar;

#[cfg(feature = "python")]
mod python;
