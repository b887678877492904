//! How many metadata operations the active controller's logic handles per
//! second, quorum aside: each operation is decided, its records encoded,
//! decoded and replayed into the committed image, as a driver would.
//! `cargo test --release --test controller_throughput -- --ignored --nocapture`

use std::time::Instant;

use faultline_broker::config::BrokerConfig;
use faultline_broker::controller::quorum_controller::{
    ControllerConfig, ControllerResult, QuorumController, DEFAULT_CLUSTER_ID,
};
use faultline_broker::controller::records::MetadataRecord;
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    BrokerHeartbeatRequest, BrokerId, BrokerRegistrationRequest, CreateTopicsRequest, DeleteTopicsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

struct Driver {
    ctl: QuorumController,
    next_offset: i64,
}

impl Driver {
    fn run<R>(&mut self, r: ControllerResult<R>) -> R {
        for rec in &r.records {
            let decoded = MetadataRecord::decode(&rec.encode()).unwrap();
            self.ctl.replay(self.next_offset, &decoded).unwrap();
            self.next_offset += 1;
        }
        r.response
    }
}

#[test]
#[ignore]
fn metadata_operations_per_second() {
    let config =
        ControllerConfig::from_broker_config(&BrokerConfig { max_partitions: 1_000_000, ..BrokerConfig::default() });
    let mut d = Driver { ctl: QuorumController::new(config, 1), next_offset: 1 };
    let r = d.ctl.activate(1, 0);
    d.run(r);
    let brokers = 3;
    let mut epochs = Vec::new();
    for n in 0..brokers {
        let req = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(n))
            .with_cluster_id(StrBytes::from_static_str(DEFAULT_CLUSTER_ID))
            .with_listeners(vec![Listener::default()
                .with_name(StrBytes::from_static_str("PLAINTEXT"))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092 + n as u16)]);
        let r = d.ctl.register_broker(&req, 0);
        epochs.push(d.run(r).broker_epoch);
    }
    let heartbeat = |n: i32, epoch: i64, offset: i64| {
        BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(n))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(offset)
    };
    for n in 0..brokers {
        let r = d.ctl.broker_heartbeat(&heartbeat(n, epochs[n as usize], 1 << 40), 0);
        d.run(r);
    }

    let topics = 2_000;
    let name = |i: i32| TopicName(StrBytes::from_string(format!("topic-{i}")));
    let start = Instant::now();
    for i in 0..topics {
        let t = CreatableTopic::default().with_name(name(i)).with_num_partitions(6).with_replication_factor(1);
        let r = d.ctl.create_topics(&CreateTopicsRequest::default().with_topics(vec![t]));
        assert_eq!(d.run(r).topics[0].error_code, 0);
    }
    let create = start.elapsed();

    let beats = 100_000;
    let start = Instant::now();
    for i in 0..beats {
        let n = i % brokers;
        let r = d.ctl.broker_heartbeat(&heartbeat(n, epochs[n as usize], d.next_offset), 1);
        assert!(r.records.is_empty());
    }
    let heartbeats = start.elapsed();

    // Every session lapses at once: all 12,000 partitions go offline.
    let start = Instant::now();
    let r = d.ctl.tick(i64::MAX / 4);
    let moved = r.records.len();
    d.run(r);
    let fence = start.elapsed();

    let snapshot_start = Instant::now();
    let snap = d.ctl.image().to_snapshot();
    let loaded = faultline_broker::controller::image::MetadataImage::from_snapshot(&snap).unwrap();
    assert_eq!(&loaded, d.ctl.image());
    let snapshot = snapshot_start.elapsed();

    let start = Instant::now();
    for i in 0..topics {
        let r = d.ctl.delete_topics(&DeleteTopicsRequest::default().with_topic_names(vec![name(i)]), 5);
        assert_eq!(d.run(r).responses[0].error_code, 0);
    }
    let delete = start.elapsed();

    let per_s = |n: i64, t: std::time::Duration| n as f64 / t.as_secs_f64();
    println!("CreateTopics (6 partitions each): {:.0}/s ({topics} in {create:?})", per_s(topics as i64, create));
    println!("BrokerHeartbeat (steady): {:.0}/s ({beats} in {heartbeats:?})", per_s(beats as i64, heartbeats));
    println!("fencing all 3 brokers at once: {moved} records in {fence:?}");
    println!("snapshot of 12,000 partitions: {} bytes, written and loaded in {snapshot:?}", snap.len());
    println!("DeleteTopics: {:.0}/s ({topics} in {delete:?})", per_s(topics as i64, delete));
}
