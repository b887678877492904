//! Cluster metadata, KRaft style (KIP-500, KIP-631): the records of the
//! metadata log, the image they build, the active controller's logic, and a
//! broker's registration and heartbeat life cycle. Everything here is pure —
//! no I/O, no clock (time comes in as `now_ms`), no tasks — so the node's
//! shell, the metadata quorum (`quorum`) and tests drive it alike.
//!
//! - [`records`]: metadata records and their documented byte format.
//! - [`image`]: [`image::MetadataImage`], built by applying committed
//!   records in order; snapshots; a broker's local changes between images.
//! - [`quorum_controller`]: [`quorum_controller::QuorumController`], the
//!   active controller: broker registration, heartbeats and fencing,
//!   CreateTopics/DeleteTopics, partition placement and leader movement.
//! - [`metadata_view`]: what a Metadata response says, read from an image.
//! - [`broker_lifecycle`]: a broker's side of registration and heartbeats.
//!
//! The quorum replicates each record as opaque bytes
//! ([`records::MetadataRecord::encode`]); every node applies the committed
//! ones to its image in offset order.

pub mod broker_lifecycle;
pub mod image;
pub mod metadata_view;
pub mod quorum_controller;
pub mod records;
