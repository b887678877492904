//! The broker's side of the cluster: what request handlers see of the
//! metadata machinery running in the driver task. They read the latest
//! published image (leaders, brokers, the controller) and hand quorum and
//! controller requests over, receiving the answer as a future.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::peers::{PeerRequest, PeerResponse};
use crate::controller::image::MetadataImage;

/// The listener name brokers register and Metadata answers with.
pub const LISTENER: &str = "PLAINTEXT";

/// A request handed to the driver.
pub struct Call {
    pub request: PeerRequest,
    /// Sent by another node (never forwarded again).
    pub from_peer: bool,
    /// Where the answer goes; `None` when nobody waits (auto-creation).
    pub reply: Option<Reply>,
}

/// Where a call's answer goes.
pub enum Reply {
    /// To a caller awaiting it.
    Wait(oneshot::Sender<PeerResponse>),
    /// Into a function run by the driver task (it must not block).
    Then(Box<dyn FnOnce(PeerResponse) + Send>),
}

impl Reply {
    /// Whether the answer can no longer reach anyone.
    pub fn is_closed(&self) -> bool {
        match self {
            Reply::Wait(tx) => tx.is_closed(),
            Reply::Then(_) => false,
        }
    }

    pub fn send(self, response: PeerResponse) {
        match self {
            Reply::Wait(tx) => {
                let _ = tx.send(response);
            }
            Reply::Then(f) => f(response),
        }
    }
}

/// What handlers read: the image last published and the active controller.
struct Published {
    image: Arc<MetadataImage>,
    controller_id: i32,
}

/// Shared by the node core and the driver.
///
/// The call queue is unbounded, but what can be in it is not: each
/// connection has at most one request in progress (Kafka's ordering), so
/// `max_connections` bounds the waiting calls, and auto-creations are capped
/// per Metadata request.
pub struct ClusterLink {
    pub node_id: i32,
    tx: mpsc::UnboundedSender<Call>,
    published: Mutex<Published>,
    /// Signalled on every publish (the replica fetcher looks again).
    changed: tokio::sync::Notify,
    /// A controlled shutdown asked of the driver, and who waits for it.
    shutdown_asked: tokio::sync::Notify,
    shutdown_done: Mutex<Option<oneshot::Sender<()>>>,
}

impl ClusterLink {
    pub fn new(node_id: i32) -> (Arc<ClusterLink>, mpsc::UnboundedReceiver<Call>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let published = Mutex::new(Published { image: Arc::new(MetadataImage::empty()), controller_id: -1 });
        let link = ClusterLink {
            node_id,
            tx,
            published,
            changed: tokio::sync::Notify::new(),
            shutdown_asked: tokio::sync::Notify::new(),
            shutdown_done: Mutex::new(None),
        };
        (Arc::new(link), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest metadata image this node has applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.lock().image.clone()
    }

    /// The quorum leader as this node knows it, or -1.
    pub fn controller_id(&self) -> i32 {
        self.lock().controller_id
    }

    pub fn publish(&self, image: Option<Arc<MetadataImage>>, controller_id: i32) {
        let mut p = self.lock();
        if let Some(image) = image {
            p.image = image;
        }
        p.controller_id = controller_id;
        drop(p);
        self.changed.notify_waiters();
    }

    /// Resolves at the next publish.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Hand `request` to the driver; resolves to its answer, or `None` if the
    /// driver has stopped (the node is shutting down).
    pub fn call(&self, request: PeerRequest, from_peer: bool) -> BoxFuture<'static, Option<PeerResponse>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Call { request, from_peer, reply: Some(Reply::Wait(reply)) }).is_ok();
        Box::pin(async move {
            if !sent {
                return None;
            }
            rx.await.ok()
        })
    }

    /// Ask the driver for a controlled shutdown: the controller moves this
    /// broker's partition leadership away (and a quorum leader resigns)
    /// before the node stops. Resolves once that is done, or with an error
    /// if the driver stopped first.
    pub fn controlled_shutdown(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.shutdown_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.shutdown_asked.notify_one();
        rx
    }

    /// Resolves when a controlled shutdown is asked.
    pub async fn shutdown_asked(&self) {
        self.shutdown_asked.notified().await
    }

    /// The controlled shutdown asked is complete.
    pub fn shutdown_complete(&self) {
        if let Some(tx) = self.shutdown_done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    /// Whether a controlled shutdown waits for [`Self::shutdown_complete`].
    pub fn shutdown_pending(&self) -> bool {
        self.shutdown_done.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Hand `request` over with nobody waiting for the answer.
    pub fn submit(&self, request: PeerRequest) {
        let _ = self.tx.send(Call { request, from_peer: false, reply: None });
    }

    /// Hand `request` over; the driver task passes its answer to `then`.
    pub fn submit_then(&self, request: PeerRequest, then: impl FnOnce(PeerResponse) + Send + 'static) {
        let _ = self.tx.send(Call { request, from_peer: false, reply: Some(Reply::Then(Box::new(then))) });
    }
}
