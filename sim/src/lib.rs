//! Faultline's deterministic simulator: the broker's own nodes on turmoil's
//! network and a simulated disk, with seeded faults, recorded histories and
//! Kafka checkers.

pub mod checker;
pub mod cli;
pub mod disk;
pub mod group_timing;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod probes;
pub mod recorder;
pub mod runner;
pub mod scenario;
pub mod seam;
pub mod seed;
pub mod simlog;
pub mod swarm;
pub mod sweep;
pub mod trace;
pub mod workload;
