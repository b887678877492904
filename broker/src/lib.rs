//! Faultline's broker crate: the node that `faultline serve` runs and the
//! simulator runs, unchanged.
//!
//! - [`io`]: the I/O seam (sockets, files, time, sleep, spawn, randomness).
//! - [`storage`]: the partition log: segments, indexes, recovery, flush.
//! - [`wire`]: Kafka wire framing and the API version table.
//! - [`server`]: the broker node: topics, request handlers, long-poll fetch.
//! - [`cluster`]: a node's membership in the cluster: peer connections.
//! - [`client`]: producer, consumer and admin clients over the same seam.
//! - [`controller`]: cluster metadata: records, the metadata image, the
//!   active controller's logic, a broker's registration life cycle.
//! - [`config`]: broker and topic configuration, and the planted-bug switches.
//! - [`compression`]: bounded decompression of record batches, every codec.
//! - [`quorum`]: the metadata quorum, a KRaft-style Raft core (sans IO).
//! - [`replication`]: partition replication: the leader's ISR and high
//!   watermark, the follower's fetcher.
//! - [`record_batch`]: the one definition of the Kafka v2 record batch
//!   layout, used by storage, wire and client alike.

#[macro_use]
mod invariant;

pub mod client;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod controller;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod io;
pub mod quorum;
pub mod record_batch;
pub mod replication;
pub mod server;
pub mod storage;
pub mod wire;
