//! Client connections: the accept loop, and one task per connection that
//! reads frames, answers them strictly in order (Kafka's per-connection
//! guarantee), and closes the connection on anything it cannot parse.

use std::sync::Arc;
use std::time::Duration;

use super::handlers::{self, Reply};
use super::Broker;
use crate::io::{self, Listener, Stream};
use crate::wire::{read_frame, write_frame};

pub(super) async fn accept_loop(broker: Arc<Broker>, listener: Box<dyn Listener>) {
    let stopping = broker.stopping();
    tokio::pin!(stopping);
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopping => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                next_id += 1;
                let id = next_id;
                tracing::debug!(conn = id, %peer, "connection accepted");
                let b = broker.clone();
                io::spawn(&broker.env, "broker-connection", async move { serve(b, stream, peer, id).await });
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                broker.env.sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("accept loop stopped");
}

async fn serve(broker: Arc<Broker>, mut stream: Box<dyn Stream>, peer: String, id: u64) {
    let stopping = broker.stopping();
    tokio::pin!(stopping);
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stopping => return,
            f = read_frame(&mut stream, max) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::debug!(conn = id, %peer, "connection closed by client");
                return;
            }
            Err(e) => {
                tracing::warn!(conn = id, %peer, error = %e, "closing connection: bad frame");
                return;
            }
        };
        match handlers::handle(&broker, frame).await {
            Reply::Frame(out) => {
                if let Err(e) = write_frame(&mut stream, &out).await {
                    tracing::debug!(conn = id, %peer, error = %e, "connection lost while writing a response");
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::warn!(conn = id, %peer, %reason, "closing connection");
                return;
            }
        }
    }
}
