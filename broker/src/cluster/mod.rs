//! A node's membership in the cluster: peer connections to the other nodes
//! (the quorum's and the controller's requests over Kafka's wire protocol,
//! on the ordinary listener).
//!
//! - [`peers`]: one node's outgoing requests to the other nodes, per peer a
//!   fetch lane and a control lane, bounded, failures reported as events.

pub mod peers;

pub use peers::{PeerEvent, PeerRequest, PeerResponse, Peers, LANE_QUEUE_LIMIT};
