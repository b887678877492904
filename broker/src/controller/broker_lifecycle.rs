//! A broker's side of cluster membership (Kafka's `BrokerLifecycleManager`):
//! register with the active controller, heartbeat every
//! `broker.heartbeat.interval.ms`, track whether the controller has fenced
//! the broker and how far it has applied the metadata log, and run a
//! controlled shutdown.
//!
//! Inputs and outputs only: [`BrokerLifecycle::poll`] hands out the next
//! request to send (tagged with an id), and the driver reports the answer
//! ([`BrokerLifecycle::on_response`]), a lost request
//! ([`BrokerLifecycle::on_failure`]), a new quorum leader
//! ([`BrokerLifecycle::on_controller_change`]) and metadata it has applied.
//! An answer to anything but the request in flight is ignored, so a late
//! reply from a former controller cannot move the state.
//!
//! The registration lives in the metadata log, so a controller failover by
//! itself needs no new one: the broker heartbeats to the new controller with
//! the same epoch. It registers again when the controller does not know that
//! epoch (STALE_BROKER_EPOCH, BROKER_ID_NOT_REGISTERED — e.g. a failover lost
//! an uncommitted registration), and re-sends a registration that got no
//! answer before the failover.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::broker_registration_request::{Feature, Listener};
use kafka_protocol::messages::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest, BrokerRegistrationResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::quorum_controller::METADATA_VERSION;
use super::records::Endpoint;

/// Kafka's broker states, as far as registration is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Not registered (or the registration was lost): registering.
    Starting,
    /// Registered and fenced: catching up on the metadata log.
    Recovery,
    /// Unfenced: may lead partitions and serve clients.
    Running,
    /// Asked the controller to move its leadership away.
    PendingControlledShutdown,
    /// The controller agreed; nothing more is sent.
    ShuttingDown,
}

/// The broker's identity and timing.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// Drawn anew by every start of the process.
    pub incarnation_id: Uuid,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i64,
    /// A request unanswered for this long is given up and retried.
    pub request_timeout_ms: i64,
    /// First wait after a failed request; doubles per failure up to the
    /// heartbeat interval.
    pub retry_backoff_ms: i64,
}

/// A request for the active controller.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleRequest {
    Register(BrokerRegistrationRequest),
    Heartbeat(BrokerHeartbeatRequest),
}

/// What to send, to whom, and the id its answer must be reported with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub id: u64,
    pub controller_id: i32,
    pub request: LifecycleRequest,
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleResponse {
    Register(BrokerRegistrationResponse),
    Heartbeat(BrokerHeartbeatResponse),
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    deadline_ms: i64,
}

/// The state machine. See the module doc.
#[derive(Debug)]
pub struct BrokerLifecycle {
    config: LifecycleConfig,
    state: BrokerState,
    broker_epoch: i64,
    /// The epoch of the previous registration of this process, for
    /// `previous_broker_epoch`.
    previous_epoch: i64,
    fenced: bool,
    applied_offset: i64,
    ready_to_unfence: bool,
    controller: Option<i32>,
    in_flight: Option<InFlight>,
    next_id: u64,
    next_send_ms: i64,
    failures: u32,
    last_error: Option<ResponseError>,
}

impl BrokerLifecycle {
    pub fn new(config: LifecycleConfig, now_ms: i64) -> BrokerLifecycle {
        BrokerLifecycle {
            config,
            state: BrokerState::Starting,
            broker_epoch: -1,
            previous_epoch: -1,
            fenced: true,
            applied_offset: -1,
            ready_to_unfence: true,
            controller: None,
            in_flight: None,
            next_id: 1,
            next_send_ms: now_ms,
            failures: 0,
            last_error: None,
        }
    }

    /// This run's incarnation: drawn anew by every start of the process.
    pub fn incarnation_id(&self) -> Uuid {
        self.config.incarnation_id
    }

    pub fn state(&self) -> BrokerState {
        self.state
    }

    /// The current registration's epoch; -1 when not registered.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// The last metadata offset this broker has applied, as reported.
    pub fn applied_offset(&self) -> i64 {
        self.applied_offset
    }

    /// The last error a controller answered with, for logs and status.
    pub fn last_error(&self) -> Option<ResponseError> {
        self.last_error
    }

    /// While false, heartbeats ask to stay fenced (`want_fence`): the broker
    /// is still opening its logs.
    pub fn set_ready_to_unfence(&mut self, ready: bool) {
        self.ready_to_unfence = ready;
    }

    /// The broker has applied the metadata log through `offset`. Once that
    /// covers its own registration a fenced broker heartbeats at once, so it
    /// is unfenced without waiting a whole interval.
    pub fn on_metadata_applied(&mut self, offset: i64, now_ms: i64) {
        self.applied_offset = self.applied_offset.max(offset);
        if self.state == BrokerState::Recovery && self.fenced && self.applied_offset >= self.broker_epoch {
            self.next_send_ms = self.next_send_ms.min(now_ms);
        }
    }

    /// The quorum's leader changed (`None`: unknown). What is in flight is
    /// forgotten and the next request goes to the new controller at once.
    pub fn on_controller_change(&mut self, controller: Option<i32>, now_ms: i64) {
        if controller == self.controller {
            return;
        }
        self.controller = controller;
        self.in_flight = None;
        self.failures = 0;
        self.next_send_ms = now_ms;
    }

    /// Ask the controller to move this broker's leadership away and let it stop.
    pub fn begin_controlled_shutdown(&mut self, now_ms: i64) {
        match self.state {
            BrokerState::Starting => self.state = BrokerState::ShuttingDown,
            BrokerState::Recovery | BrokerState::Running => {
                self.state = BrokerState::PendingControlledShutdown;
                self.next_send_ms = now_ms;
            }
            BrokerState::PendingControlledShutdown | BrokerState::ShuttingDown => {}
        }
    }

    /// When [`Self::poll`] next has something to do: a send, or giving up
    /// on the request in flight. `None` when nothing will happen until an
    /// input arrives.
    pub fn next_wakeup(&self) -> Option<i64> {
        if self.state == BrokerState::ShuttingDown {
            return None;
        }
        match self.in_flight {
            Some(f) => Some(f.deadline_ms),
            None => self.controller.map(|_| self.next_send_ms),
        }
    }

    /// The request to send now, if any. A request in flight past its
    /// deadline counts as failed first.
    pub fn poll(&mut self, now_ms: i64) -> Option<Outgoing> {
        if let Some(f) = self.in_flight {
            if now_ms < f.deadline_ms {
                return None;
            }
            tracing::debug!(node = self.config.node_id, id = f.id, "controller request timed out");
            self.on_failure(f.id, now_ms);
        }
        let controller_id = self.controller?;
        if self.state == BrokerState::ShuttingDown || now_ms < self.next_send_ms {
            return None;
        }
        let request = match self.state {
            BrokerState::Starting => LifecycleRequest::Register(self.registration()),
            _ => LifecycleRequest::Heartbeat(self.heartbeat()),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some(InFlight { id, deadline_ms: now_ms + self.config.request_timeout_ms });
        tracing::trace!(node = self.config.node_id, id, controller_id, state = ?self.state, "to the controller");
        Some(Outgoing { id, controller_id, request })
    }

    fn registration(&self) -> BrokerRegistrationRequest {
        let c = &self.config;
        BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(c.node_id))
            .with_cluster_id(StrBytes::from_string(c.cluster_id.clone()))
            .with_incarnation_id(c.incarnation_id)
            .with_listeners(
                c.listeners
                    .iter()
                    .map(|l| {
                        Listener::default()
                            .with_name(StrBytes::from_string(l.name.clone()))
                            .with_host(StrBytes::from_string(l.host.clone()))
                            .with_port(l.port)
                            .with_security_protocol(l.security_protocol)
                    })
                    .collect(),
            )
            .with_features(vec![Feature::default()
                .with_name(StrBytes::from_static_str("metadata.version"))
                .with_min_supported_version(METADATA_VERSION)
                .with_max_supported_version(METADATA_VERSION)])
            .with_rack(c.rack.clone().map(StrBytes::from_string))
            .with_previous_broker_epoch(self.previous_epoch)
    }

    fn heartbeat(&self) -> BrokerHeartbeatRequest {
        BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_broker_epoch(self.broker_epoch)
            .with_current_metadata_offset(self.applied_offset)
            .with_want_fence(!self.ready_to_unfence)
            .with_want_shut_down(self.state == BrokerState::PendingControlledShutdown)
    }

    /// The request `id` got no answer (connection lost, timed out): retry
    /// after a backoff. A registration is sent again; a heartbeat too, with
    /// the same epoch.
    pub fn on_failure(&mut self, id: u64, now_ms: i64) {
        if self.in_flight.is_none_or(|f| f.id != id) {
            return;
        }
        self.in_flight = None;
        self.back_off(now_ms);
    }

    fn back_off(&mut self, now_ms: i64) {
        let wait = self.config.retry_backoff_ms.saturating_mul(1 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        self.next_send_ms = now_ms + wait.min(self.config.heartbeat_interval_ms);
    }

    /// The answer to request `id`.
    pub fn on_response(&mut self, id: u64, response: LifecycleResponse, now_ms: i64) {
        tracing::trace!(node = self.config.node_id, id, ?response, "from the controller");
        if self.in_flight.is_none_or(|f| f.id != id) {
            return;
        }
        self.in_flight = None;
        match response {
            LifecycleResponse::Register(r) => self.on_registration(r, now_ms),
            LifecycleResponse::Heartbeat(r) => self.on_heartbeat(r, now_ms),
        }
    }

    fn on_registration(&mut self, r: BrokerRegistrationResponse, now_ms: i64) {
        if self.state != BrokerState::Starting {
            return;
        }
        match ResponseError::try_from_code(r.error_code) {
            None => {
                tracing::info!(node = self.config.node_id, epoch = r.broker_epoch, "registered with the controller");
                self.broker_epoch = r.broker_epoch;
                self.previous_epoch = r.broker_epoch;
                self.state = BrokerState::Recovery;
                self.fenced = true;
                self.failures = 0;
                self.last_error = None;
                self.next_send_ms = now_ms;
            }
            Some(e) => {
                tracing::warn!(node = self.config.node_id, error = ?e, "registration refused; retrying");
                self.last_error = Some(e);
                self.back_off(now_ms);
            }
        }
    }

    fn on_heartbeat(&mut self, r: BrokerHeartbeatResponse, now_ms: i64) {
        match ResponseError::try_from_code(r.error_code) {
            None => {
                self.failures = 0;
                self.last_error = None;
                self.fenced = r.is_fenced;
                self.next_send_ms = now_ms + self.config.heartbeat_interval_ms;
                match self.state {
                    _ if r.should_shut_down => self.state = BrokerState::ShuttingDown,
                    BrokerState::Recovery if !r.is_fenced => self.state = BrokerState::Running,
                    BrokerState::Running if r.is_fenced => self.state = BrokerState::Recovery,
                    // Shutting down: ask again soon, the controller is moving leaders.
                    BrokerState::PendingControlledShutdown => {
                        self.next_send_ms = now_ms + self.config.retry_backoff_ms.min(self.config.heartbeat_interval_ms)
                    }
                    _ => {}
                }
            }
            Some(e @ (ResponseError::StaleBrokerEpoch | ResponseError::BrokerIdNotRegistered)) => {
                tracing::info!(node = self.config.node_id, error = ?e, "the controller does not know this registration; registering again");
                self.last_error = Some(e);
                if self.state == BrokerState::PendingControlledShutdown {
                    // Nothing to hand over under an unknown registration.
                    self.state = BrokerState::ShuttingDown;
                    return;
                }
                self.state = BrokerState::Starting;
                self.broker_epoch = -1;
                self.fenced = true;
                self.next_send_ms = now_ms;
            }
            Some(e) => {
                self.last_error = Some(e);
                self.back_off(now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle() -> BrokerLifecycle {
        BrokerLifecycle::new(
            LifecycleConfig {
                node_id: 4,
                cluster_id: "c".into(),
                incarnation_id: Uuid::from_u128(9),
                listeners: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: None,
                heartbeat_interval_ms: 2000,
                request_timeout_ms: 1000,
                retry_backoff_ms: 100,
            },
            0,
        )
    }

    fn hb(fenced: bool, shut: bool) -> LifecycleResponse {
        LifecycleResponse::Heartbeat(
            BrokerHeartbeatResponse::default()
                .with_is_fenced(fenced)
                .with_should_shut_down(shut)
                .with_is_caught_up(!fenced),
        )
    }

    fn registered(epoch: i64) -> LifecycleResponse {
        LifecycleResponse::Register(BrokerRegistrationResponse::default().with_broker_epoch(epoch))
    }

    #[test]
    fn registers_recovers_runs_and_heartbeats_on_interval() {
        let mut l = lifecycle();
        assert_eq!(l.poll(0), None, "no controller known yet");
        assert_eq!(l.next_wakeup(), None);
        l.on_controller_change(Some(1), 5);
        let out = l.poll(5).unwrap();
        assert_eq!(out.controller_id, 1);
        let LifecycleRequest::Register(req) = &out.request else { panic!("{out:?}") };
        assert_eq!((req.broker_id.0, req.incarnation_id, req.listeners[0].port), (4, Uuid::from_u128(9), 9092));
        assert_eq!(l.poll(6), None, "one request at a time");
        l.on_response(out.id, registered(17), 10);
        assert_eq!((l.state(), l.broker_epoch(), l.is_fenced()), (BrokerState::Recovery, 17, true));

        let out = l.poll(10).unwrap();
        let LifecycleRequest::Heartbeat(h) = &out.request else { panic!() };
        assert_eq!((h.broker_epoch, h.current_metadata_offset, h.want_fence, h.want_shut_down), (17, -1, false, false));
        l.on_response(out.id, hb(true, false), 12);
        assert_eq!(l.poll(13), None);
        assert_eq!(l.next_wakeup(), Some(2012));
        // Catching up on metadata brings the next heartbeat forward.
        l.on_metadata_applied(17, 100);
        let out = l.poll(100).unwrap();
        let LifecycleRequest::Heartbeat(h) = &out.request else { panic!() };
        assert_eq!(h.current_metadata_offset, 17);
        l.on_response(out.id, hb(false, false), 101);
        assert_eq!((l.state(), l.is_fenced()), (BrokerState::Running, false));
        assert_eq!(l.poll(2000), None);
        assert!(l.poll(2101).is_some());
    }

    #[test]
    fn stale_answers_are_ignored_and_failover_resends() {
        let mut l = lifecycle();
        l.on_controller_change(Some(1), 0);
        let first = l.poll(0).unwrap();
        l.on_controller_change(Some(2), 50);
        // The old controller's late answer changes nothing.
        l.on_response(first.id, registered(3), 60);
        assert_eq!(l.state(), BrokerState::Starting);
        let second = l.poll(60).unwrap();
        assert_eq!(second.controller_id, 2);
        assert!(matches!(second.request, LifecycleRequest::Register(_)));
        // A timeout counts as a failure and backs off.
        assert_eq!(l.poll(1059), None);
        assert_eq!(l.poll(1060), None, "timed out; backing off 100 ms");
        assert_eq!(l.next_wakeup(), Some(1160));
        let third = l.poll(1160).unwrap();
        l.on_response(third.id, registered(8), 1170);
        assert_eq!(l.broker_epoch(), 8);
    }

    #[test]
    fn unknown_epoch_re_registers_and_errors_back_off() {
        let mut l = lifecycle();
        l.on_controller_change(Some(1), 0);
        let r = l.poll(0).unwrap();
        l.on_response(r.id, LifecycleResponse::Register(BrokerRegistrationResponse::default().with_error_code(101)), 1);
        assert_eq!(
            (l.state(), l.last_error()),
            (BrokerState::Starting, Some(ResponseError::DuplicateBrokerRegistration))
        );
        assert_eq!(l.poll(50), None);
        let r = l.poll(101).unwrap();
        l.on_response(r.id, registered(5), 102);
        let h = l.poll(102).unwrap();
        l.on_response(h.id, LifecycleResponse::Heartbeat(BrokerHeartbeatResponse::default().with_error_code(41)), 103);
        assert_eq!(l.state(), BrokerState::Recovery, "NOT_CONTROLLER only backs off");
        let h = l.poll(203).unwrap();
        l.on_response(h.id, LifecycleResponse::Heartbeat(BrokerHeartbeatResponse::default().with_error_code(77)), 204);
        assert_eq!((l.state(), l.broker_epoch()), (BrokerState::Starting, -1));
        let r = l.poll(204).unwrap();
        let LifecycleRequest::Register(req) = r.request else { panic!() };
        assert_eq!(req.previous_broker_epoch, 5);
    }

    #[test]
    fn controlled_shutdown_waits_for_the_controller() {
        let mut l = lifecycle();
        l.set_ready_to_unfence(false);
        l.on_controller_change(Some(1), 0);
        let r = l.poll(0).unwrap();
        l.on_response(r.id, registered(5), 1);
        let h = l.poll(1).unwrap();
        let LifecycleRequest::Heartbeat(req) = &h.request else { panic!() };
        assert!(req.want_fence);
        l.set_ready_to_unfence(true);
        l.on_response(h.id, hb(false, false), 2);
        assert_eq!(l.state(), BrokerState::Running);
        l.begin_controlled_shutdown(3);
        let h = l.poll(3).unwrap();
        let LifecycleRequest::Heartbeat(req) = &h.request else { panic!() };
        assert!(req.want_shut_down);
        l.on_response(h.id, hb(false, false), 4);
        assert_eq!(l.state(), BrokerState::PendingControlledShutdown);
        assert_eq!(l.next_wakeup(), Some(104));
        let h = l.poll(104).unwrap();
        l.on_response(h.id, hb(true, true), 105);
        assert_eq!(l.state(), BrokerState::ShuttingDown);
        assert_eq!((l.poll(10_000), l.next_wakeup()), (None, None));
    }
}
