//! The inner-cluster transport against a small scripted peer over real
//! loopback sockets: the fetch lane does not hold up the control lane, a
//! dead or unknown peer fails requests, and a returning peer is reached
//! again.

use std::sync::Arc;
use std::time::Duration;

use faultline_broker::cluster::{PeerEvent, PeerRequest, PeerResponse, Peers, Timeouts};
use faultline_broker::io::real::RealIo;
use faultline_broker::io::{self, Env};
use faultline_broker::wire::{
    advertised_api_versions, decode_body, decode_request_header, encode_response, read_frame, write_frame,
    RequestPrefix,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, VoteRequest, VoteResponse};
use tokio::sync::{mpsc, watch};

/// How long the scripted peer holds a Fetch, as a leader with nothing new does.
const FETCH_HOLD: Duration = Duration::from_millis(1500);
const REQUEST_TIMEOUT: Timeouts = Timeouts { quorum: Duration::from_secs(5), request: Duration::from_secs(5) };

/// A peer speaking ApiVersions, Vote (granted) and Fetch (answered after
/// [`FETCH_HOLD`]) on `addr` until `stop` turns true; it then closes its
/// listener and every connection.
async fn scripted_peer(env: &Env, addr: &str, stop: watch::Receiver<bool>) -> String {
    let listener = env.listen(addr).await.unwrap();
    let bound = listener.local_addr().unwrap().to_string();
    let task_env = env.clone();
    io::spawn(env, "scripted-peer", async move {
        let mut stop_accept = stop.clone();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop_accept.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let Ok((mut sock, _)) = accepted else { return };
            let (env, mut stop) = (task_env.clone(), stop.clone());
            io::spawn(&task_env, "scripted-peer-conn", async move {
                loop {
                    let frame = tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        f = read_frame(&mut sock, 1 << 20) => f,
                    };
                    let Ok(Some(mut frame)) = frame else { return };
                    let prefix = RequestPrefix::parse(&frame).unwrap();
                    let key = prefix.known_api_key().unwrap();
                    let (v, corr) = (prefix.api_version, prefix.correlation_id);
                    decode_request_header(&mut frame, key, v).unwrap();
                    let reply = match key {
                        ApiKey::ApiVersions => encode_response(key, v, corr, &advertised_api_versions(0)).unwrap(),
                        ApiKey::Vote => {
                            let _: VoteRequest = decode_body(&mut frame, v).unwrap();
                            assert_eq!(v, 2, "pre-vote needs Vote v2");
                            encode_response(key, v, corr, &VoteResponse::default()).unwrap()
                        }
                        ApiKey::Fetch => {
                            let req: FetchRequest = decode_body(&mut frame, v).unwrap();
                            assert_eq!(v, 12, "the quorum fetches at v12");
                            assert_eq!(req.replica_id.0, 3, "v12 names the fetching replica in replica_id");
                            tokio::select! {
                                biased;
                                _ = stop.wait_for(|s| *s) => return,
                                _ = env.sleep(FETCH_HOLD) => {}
                            }
                            let resp = FetchResponse::default().with_session_id(7);
                            encode_response(key, v, corr, &resp).unwrap()
                        }
                        other => panic!("scripted peer does not speak {other:?}"),
                    };
                    if write_frame(&mut sock, &reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    bound
}

fn fetch() -> PeerRequest {
    let mut f = FetchRequest::default();
    f.replica_id = 3.into();
    f.max_wait_ms = FETCH_HOLD.as_millis() as i32;
    PeerRequest::Fetch(f)
}

fn vote() -> PeerRequest {
    let mut v = VoteRequest::default();
    v.topics = vec![kafka_protocol::messages::vote_request::TopicData::default()];
    v.topics[0].partitions = vec![kafka_protocol::messages::vote_request::PartitionData::default().with_pre_vote(true)];
    PeerRequest::Vote(v)
}

async fn next(events: &mut mpsc::UnboundedReceiver<PeerEvent>) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event within 10s").unwrap()
}

fn is_failed(e: &PeerEvent, id: u64) -> bool {
    matches!(e, PeerEvent::Failed { request_id, .. } if *request_id == id)
}

#[tokio::test]
async fn lanes_failures_and_reconnection() {
    let env = RealIo::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = scripted_peer(&env, "127.0.0.1:0", stop_rx).await;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let peers = Arc::new(Peers::new(env.clone(), "node-3".into(), REQUEST_TIMEOUT, events_tx));
    peers.set_address(1, addr.clone());

    // A Vote sent while a long-poll Fetch is outstanding is answered first.
    peers.send(1, 10, fetch());
    tokio::time::sleep(Duration::from_millis(200)).await;
    peers.send(1, 11, vote());
    let first = next(&mut events).await;
    assert!(
        matches!(&first, PeerEvent::Response { from: 1, request_id: 11, response: PeerResponse::Vote(_) }),
        "{first:?}"
    );
    let second = next(&mut events).await;
    match &second {
        PeerEvent::Response { from: 1, request_id: 10, response: PeerResponse::Fetch(f) } => {
            assert_eq!(f.session_id, 7)
        }
        other => panic!("{other:?}"),
    }

    // An unknown node fails at once.
    peers.send(2, 12, vote());
    let e = next(&mut events).await;
    assert!(matches!(&e, PeerEvent::Failed { to: 2, request_id: 12, .. }), "{e:?}");

    // The peer goes down: requests fail, on both lanes.
    stop_tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in [13, 14] {
        peers.send(1, id, vote());
        let e = next(&mut events).await;
        assert!(is_failed(&e, id), "{e:?}");
    }
    peers.send(1, 15, fetch());
    let e = next(&mut events).await;
    assert!(is_failed(&e, 15), "{e:?}");

    // It comes back on the same address: requests succeed again once the
    // lane's backoff has passed.
    let (_stop_tx2, stop_rx2) = watch::channel(false);
    scripted_peer(&env, &addr, stop_rx2).await;
    let mut id = 100;
    let answered = loop {
        peers.send(1, id, vote());
        match next(&mut events).await {
            PeerEvent::Response { request_id, .. } if request_id == id => break id,
            e => assert!(is_failed(&e, id), "{e:?}"),
        }
        assert!(id < 150, "the returning peer is never reached");
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answered >= 100);

    // After stop every request fails.
    peers.stop();
    peers.send(1, 200, vote());
    let e = next(&mut events).await;
    assert!(is_failed(&e, 200), "{e:?}");
}

#[tokio::test]
async fn a_full_lane_fails_at_once() {
    let env = RealIo::new();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let addr = scripted_peer(&env, "127.0.0.1:0", stop_rx).await;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let peers = Peers::new(env.clone(), "node-3".into(), REQUEST_TIMEOUT, events_tx);
    peers.set_address(1, addr);
    let limit = faultline_broker::cluster::LANE_QUEUE_LIMIT as u64;
    // The lane task has not run yet on this one-thread runtime, so `limit`
    // requests fill its queue and the next one is refused.
    for id in 0..=limit {
        peers.send(1, id, fetch());
    }
    let e = next(&mut events).await;
    assert!(is_failed(&e, limit), "{e:?}");
    // The control lane is unaffected.
    peers.send(1, 1000, vote());
    let e = next(&mut events).await;
    assert!(matches!(&e, PeerEvent::Response { request_id: 1000, .. }), "{e:?}");
}
