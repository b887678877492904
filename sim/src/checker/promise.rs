//! Which anomalies a configuration promises never to show, and so makes
//! fatal. A check a correct broker can never trip is worth nothing as
//! information: under the configuration that promises it, it fails the run.
//!
//! | anomaly | fatal when |
//! |---|---|
//! | `lost-write` | always for acknowledged sends (acks 1 or -1; acks 0 sends are recorded `info` and never count as acknowledged), unless the medium may corrupt fsynced data |
//! | `unseen` | unless the medium may corrupt fsynced data: the final read pages every partition to the log end the healed broker reports, so an acknowledged value it never returned was dropped |
//! | `duplicate` | with idempotence on, or with no retries (one attempt per send cannot store a value twice); informational when a non-idempotent producer retries |
//! | `inconsistent-offsets`, `G1a`, `unexpected` | always |
//! | `nonmonotonic-send` | always: a send invoked after another completed lands after it, retries or not |
//! | `nonmonotonic-poll`, `poll-skip` | always, within one consumer session: a seek is recorded as an `assign`, which starts the comparison afresh |
//! | `int-nonmonotonic-poll`, `int-poll-skip` | always |
//!
//! "The medium may corrupt fsynced data" means bit rot, crash-corrupt, lost
//! or misdirected writes, or fsync failures that drop pages: one replica
//! cannot repair any of them, so a correct broker truncates at the damage
//! and what was acknowledged after it is gone. The runner's `corrupt-read`
//! finding follows the same rule.

use super::{AnomalyKind, CheckOptions};
use crate::scenario::Scenario;

/// The anomaly kinds `scenario` (resolved: no swarm ranges left) promises.
pub fn promised(scenario: &Scenario) -> CheckOptions {
    let w = &scenario.workload;
    let rot = scenario.medium_may_corrupt();
    let invalid_on = AnomalyKind::ALL
        .into_iter()
        .filter(|k| match k {
            AnomalyKind::LostWrite | AnomalyKind::Unseen => !rot,
            AnomalyKind::Duplicate => w.idempotence || w.retries == 0,
            _ => true,
        })
        .collect();
    CheckOptions { invalid_on }
}
