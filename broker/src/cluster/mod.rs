//! A node's membership in a cluster (KRaft mode, `process_roles` set): the
//! metadata machinery as one sans-IO state machine ([`metadata_node`]), the
//! async driver that runs it over the seam ([`driver`]), the connections to
//! other nodes ([`peers`]: per peer a fetch lane and a control lane,
//! bounded, failures reported as events), what request handlers see of it
//! ([`link`]), and how a published metadata image becomes hosted partitions
//! ([`hosting`]).
//!
//! A single broker (no `process_roles`) uses none of this.

pub mod driver;
pub mod hosting;
pub mod link;
pub mod metadata_node;
pub mod peers;

pub use link::ClusterLink;
pub use metadata_node::{MetadataNode, MetadataNodeConfig};
pub use peers::{PeerEvent, PeerRequest, PeerResponse, Peers, Timeouts, LANE_QUEUE_LIMIT};

#[cfg(test)]
mod tests;
