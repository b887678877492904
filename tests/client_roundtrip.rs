//! The clients against a real broker over loopback TCP: produce, consume,
//! seek and admin, end to end.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use faultline_broker::client::partitioner::partition_for_key;
use faultline_broker::client::{
    Admin, AdminConfig, AutoOffsetReset, ClientError, Compression, Consumer, ConsumerConfig, ConsumerRecord, NewTopic,
    ProduceError, Producer, ProducerConfig, ProducerRecord, ResponseError, TopicPartition,
};
use faultline_broker::config::BrokerConfig;
use faultline_broker::io::real::RealIo;
use faultline_broker::io::Env;
use faultline_broker::server::{self, RunningBroker};

struct TestBroker {
    env: Env,
    bootstrap: Vec<String>,
    _broker: RunningBroker,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let env = RealIo::new();
    let config =
        BrokerConfig { listen: "127.0.0.1:0".into(), data_dir: dir.path().to_path_buf(), ..BrokerConfig::default() };
    let broker = server::start(env.clone(), config).await.unwrap();
    let bootstrap = vec![broker.local_addr().to_string()];
    TestBroker { env, bootstrap, _broker: broker, _dir: dir }
}

impl TestBroker {
    fn admin(&self) -> Admin {
        Admin::new(self.env.clone(), AdminConfig::new(self.bootstrap.clone())).unwrap()
    }

    fn producer(&self, f: impl FnOnce(&mut ProducerConfig)) -> Producer {
        let mut c = ProducerConfig::new(self.bootstrap.clone());
        c.request_timeout_ms = 5_000;
        c.delivery_timeout_ms = 10_000;
        f(&mut c);
        Producer::new(self.env.clone(), c).unwrap()
    }

    fn consumer(&self) -> Consumer {
        let mut c = ConsumerConfig::new(self.bootstrap.clone());
        c.auto_offset_reset = AutoOffsetReset::Earliest;
        c.fetch_max_wait_ms = 100;
        c.request_timeout_ms = 5_000;
        Consumer::new(self.env.clone(), c).unwrap()
    }
}

/// Poll until `n` records arrived (or a few seconds passed).
async fn consume_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    for _ in 0..50 {
        if out.len() >= n {
            break;
        }
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_by_partitioner_in_order() {
    let b = start_broker().await;
    b.admin().create_topics(&[NewTopic::new("keyed", 4, 1)]).await.unwrap();
    let producer = b.producer(|_| {});
    let futures: Vec<_> = (0..200)
        .map(|i| producer.send(ProducerRecord::new("keyed", format!("v{i}")).with_key(format!("key-{}", i % 13))))
        .collect();
    let mut by_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (i, f) in futures.into_iter().enumerate() {
        let md = f.await.unwrap();
        let key = format!("key-{}", i % 13);
        assert_eq!(md.partition, partition_for_key(key.as_bytes(), 4), "{key}");
        by_partition.entry(md.partition).or_default().push((md.offset.unwrap(), format!("v{i}")));
    }
    producer.close().await;
    assert!(by_partition.len() > 1, "13 keys spread over several partitions");
    let mut consumer = b.consumer();
    consumer.assign((0..4).map(|p| TopicPartition::new("keyed", p)).collect());
    let got = consume_n(&mut consumer, 200).await;
    assert_eq!(got.len(), 200);
    for (p, sent) in by_partition {
        let offsets: Vec<i64> = sent.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..sent.len() as i64).collect::<Vec<_>>(), "send order is offset order in partition {p}");
        let read: Vec<(i64, String)> = got
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| (r.offset, String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()))
            .collect();
        assert_eq!(read, sent, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_round_trips() {
    let b = start_broker().await;
    for c in Compression::ALL {
        let topic = format!("comp-{c:?}").to_lowercase();
        b.admin().create_topics(&[NewTopic::new(&topic, 1, 1)]).await.unwrap();
        let producer = b.producer(|cfg| cfg.compression_type = c);
        let futs: Vec<_> = (0..50)
            .map(|i| {
                producer.send(
                    ProducerRecord::new(&topic, format!("{c:?} record {i} ").repeat(5))
                        .with_header("n", Some(Bytes::from(i.to_string())))
                        .with_timestamp(1_000 + i),
                )
            })
            .collect();
        for f in futs {
            f.await.unwrap();
        }
        producer.close().await;
        let mut consumer = b.consumer();
        consumer.assign(vec![TopicPartition::new(&topic, 0)]);
        let got = consume_n(&mut consumer, 50).await;
        assert_eq!(got.len(), 50, "{c:?}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.value.as_deref(), Some(format!("{c:?} record {i} ").repeat(5).as_bytes()));
            assert_eq!(r.headers, vec![("n".to_string(), Some(Bytes::from(i.to_string())))]);
            assert_eq!(r.timestamp, 1_000 + i as i64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_and_list_offsets() {
    let b = start_broker().await;
    b.admin().create_topics(&[NewTopic::new("seek", 1, 1)]).await.unwrap();
    let producer = b.producer(|_| {});
    let futs: Vec<_> = (0..10).map(|i| producer.send(ProducerRecord::new("seek", format!("{i}")))).collect();
    for f in futs {
        f.await.unwrap();
    }
    let tp = TopicPartition::new("seek", 0);
    let mut consumer = b.consumer();
    consumer.assign(vec![tp.clone()]);
    assert_eq!(consumer.beginning_offsets(std::slice::from_ref(&tp)).await.unwrap()[&tp], 0);
    assert_eq!(consumer.end_offsets(std::slice::from_ref(&tp)).await.unwrap()[&tp], 10);
    consumer.seek_to_end(&[]).await.unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 10);
    assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    consumer.seek(&tp, 3).unwrap();
    let got = consume_n(&mut consumer, 7).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), (3..10).collect::<Vec<_>>());
    assert_eq!(consumer.position(&tp).await.unwrap(), 10);
    consumer.seek_to_beginning(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 0);
    // Out of range: reset to earliest.
    consumer.seek(&tp, 1_000).unwrap();
    let got = consume_n(&mut consumer, 10).await;
    assert_eq!(got.first().map(|r| r.offset), Some(0));
    assert!(consumer.seek(&TopicPartition::new("other", 0), 0).is_err(), "not assigned");
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_has_no_offset_but_lands() {
    let b = start_broker().await;
    b.admin().create_topics(&[NewTopic::new("fire", 1, 1)]).await.unwrap();
    let producer = b.producer(|c| c.acks = 0);
    let futs: Vec<_> = (0..20).map(|i| producer.send(ProducerRecord::new("fire", format!("{i}")))).collect();
    for f in futs {
        let md = f.await.unwrap();
        assert_eq!(md.offset, None);
        assert_eq!(md.partition, 0);
    }
    producer.close().await;
    let mut consumer = b.consumer();
    consumer.assign(vec![TopicPartition::new("fire", 0)]);
    assert_eq!(consume_n(&mut consumer, 20).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_auto_create_and_stick() {
    let b = start_broker().await;
    let producer = b.producer(|c| c.linger_ms = 50);
    let futs: Vec<_> = (0..5).map(|i| producer.send(ProducerRecord::new("auto", format!("{i}")))).collect();
    let mut partitions = Vec::new();
    for f in futs {
        partitions.push(f.await.unwrap().partition);
    }
    assert!(partitions.windows(2).all(|w| w[0] == w[1]), "one batch, one partition: {partitions:?}");
    producer.flush().await;
    producer.close().await;
    let err = producer.send(ProducerRecord::new("auto", "late")).await.unwrap_err();
    assert!(err.is_definite(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_definite_or_not() {
    let b = start_broker().await;
    b.admin().create_topics(&[NewTopic::new("two", 2, 1)]).await.unwrap();
    let producer = b.producer(|_| {});
    let err = producer.send(ProducerRecord::new("two", "x").with_partition(5)).await.unwrap_err();
    assert!(matches!(err, ProduceError::Definite(_)), "{err}");
    let big = producer.send(ProducerRecord::new("two", vec![0u8; 2 << 20])).await.unwrap_err();
    assert!(big.is_definite(), "{big}");
    producer.close().await;

    // Nothing listens on the bootstrap address: never sent, so definite.
    let env = RealIo::new();
    let mut c = ProducerConfig::new(vec!["127.0.0.1:1".into()]);
    c.delivery_timeout_ms = 300;
    c.request_timeout_ms = 200;
    c.retry_backoff_ms = 20;
    let p = Producer::new(env, c).unwrap();
    let err = p.send(ProducerRecord::new("t", "x")).await.unwrap_err();
    assert!(err.is_definite(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topics() {
    let b = start_broker().await;
    let admin = b.admin();
    admin.create_topics(&[NewTopic::new("a", 3, 1).with_config("segment.bytes", "1048576")]).await.unwrap();
    admin.create_topics(&[NewTopic::new("b", 1, 1)]).await.unwrap();
    let again = admin.create_topics(&[NewTopic::new("a", 3, 1)]).await.unwrap_err();
    assert_eq!(again.broker_error(), Some(ResponseError::TopicAlreadyExists), "{again}");
    assert!(matches!(admin.create_topics(&[NewTopic::new("z", 0, 1)]).await, Err(ClientError::InvalidArgument(_))));
    assert_eq!(admin.list_topics().await.unwrap(), vec!["a".to_string(), "b".to_string()]);
    let d = admin.describe_topics(&["a".to_string()]).await.unwrap();
    assert_eq!(d[0].partitions.len(), 3);
    for p in &d[0].partitions {
        assert_eq!(p.leader, Some(0));
        assert_eq!(p.replicas, vec![0]);
        assert_eq!(p.isr, vec![0]);
    }
    let configs = admin.describe_configs("a").await.unwrap();
    assert_eq!(configs.get("segment.bytes").map(String::as_str), Some("1048576"));
    admin.delete_topics(&["a".to_string()]).await.unwrap();
    assert_eq!(admin.list_topics().await.unwrap(), vec!["b".to_string()]);
    let gone = admin.describe_topics(&["a".to_string()]).await.unwrap_err();
    assert_eq!(gone.broker_error(), Some(ResponseError::UnknownTopicOrPartition), "{gone}");
}
