//! Bounded inbound queues: the client's main queue and one per
//! subscription, fed by the decoder task.
//!
//! An event goes to every subscription whose pattern matches its `etype`,
//! and to the main queue ([`recv`](crate::VuerClient::recv)) only if no
//! subscription took it. Each queue is bounded in events and bytes; what
//! happens when it is full is the [`InboundPolicy`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::config::InboundPolicy;
use crate::ServerEvent;

/// One bounded queue of server events.
#[derive(Debug)]
pub(crate) struct Queue {
    inner: Mutex<QueueInner>,
    /// Wakes readers.
    readable: Notify,
    /// Wakes the decoder waiting for room (backpressure policy).
    room: Notify,
    max_events: usize,
    max_bytes: usize,
    policy: InboundPolicy,
}

#[derive(Debug, Default)]
struct QueueInner {
    events: VecDeque<ServerEvent>,
    bytes: usize,
    closed: bool,
}

/// What [`Queue::push`] did.
pub(crate) enum Pushed {
    Queued {
        dropped: u64,
    },
    /// Full under the backpressure policy: the event is handed back.
    Full(Box<ServerEvent>),
    /// The queue's reader is gone.
    Closed,
}

impl Queue {
    pub(crate) fn new(max_events: usize, max_bytes: usize, policy: InboundPolicy) -> Self {
        Queue {
            inner: Mutex::new(QueueInner::default()),
            readable: Notify::new(),
            room: Notify::new(),
            max_events,
            max_bytes,
            policy,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, ev: ServerEvent) -> Pushed {
        let size = ev.len();
        let mut q = self.lock();
        if q.closed {
            return Pushed::Closed;
        }
        let mut dropped = 0;
        let over = |q: &QueueInner| {
            !q.events.is_empty()
                && (q.events.len() + 1 > self.max_events || q.bytes + size > self.max_bytes)
        };
        if over(&q) {
            if self.policy == InboundPolicy::Backpressure {
                return Pushed::Full(Box::new(ev));
            }
            while over(&q) {
                let old = q.events.pop_front().expect("non-empty");
                q.bytes -= old.len();
                dropped += 1;
            }
        }
        q.bytes += size;
        q.events.push_back(ev);
        drop(q);
        self.readable.notify_one();
        Pushed::Queued { dropped }
    }

    /// Waits until an event of `size` bytes fits (or the queue is empty, or
    /// closed): the condition under which [`Queue::push`] accepts it.
    pub(crate) async fn room(&self, size: usize) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.lock();
                if q.closed
                    || q.events.is_empty()
                    || (q.events.len() < self.max_events && q.bytes + size <= self.max_bytes)
                {
                    return;
                }
            }
            notified.await;
        }
    }

    pub(crate) fn try_pop(&self) -> Result<ServerEvent, bool> {
        let mut q = self.lock();
        match q.events.pop_front() {
            Some(ev) => {
                q.bytes -= ev.len();
                drop(q);
                self.room.notify_one();
                Ok(ev)
            }
            None => Err(q.closed),
        }
    }

    /// The next event; `None` once the queue is closed and empty.
    pub(crate) async fn pop(&self) -> Option<ServerEvent> {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_pop() {
                Ok(ev) => return Some(ev),
                Err(true) => return None,
                Err(false) => notified.await,
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// No more events will come: readers drain what is left, then get `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// An `etype` pattern: `*` matches any run of characters, `?` one
/// character (the glob subset of Python's `fnmatch`).
#[derive(Debug, Clone)]
pub(crate) struct Pattern(String);

impl Pattern {
    pub(crate) fn new(p: &str) -> Self {
        Pattern(p.to_owned())
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        glob(self.0.as_bytes(), s.as_bytes())
    }
}

/// Whether `etype` matches `pattern` the way [`VuerClient::subscribe`]
/// matches them: `*` matches any run of characters, `?` one character (the
/// glob subset of Python's `fnmatch`). For filtering events that reached
/// [`VuerClient::recv`] before a subscription existed.
///
/// ```
/// assert!(vuer_client::etype_matches("GRAB_*", "GRAB_RENDER"));
/// assert!(!vuer_client::etype_matches("S?T", "SEET"));
/// ```
///
/// [`VuerClient::subscribe`]: crate::VuerClient::subscribe
/// [`VuerClient::recv`]: crate::VuerClient::recv
pub fn etype_matches(pattern: &str, etype: &str) -> bool {
    glob(pattern.as_bytes(), etype.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// A registered RPC answerer.
pub(crate) type RpcHandler =
    Arc<dyn Fn(&ServerEvent) -> Option<crate::Value> + Send + Sync + 'static>;

/// Routing of inbound events to the main queue and subscriptions.
pub(crate) struct Inbound {
    pub(crate) main: Arc<Queue>,
    subs: Mutex<Vec<(Pattern, Weak<Queue>)>>,
    rpc: Mutex<Vec<(Pattern, RpcHandler)>>,
    max_events: usize,
    max_bytes: usize,
    policy: InboundPolicy,
}

/// Where an event went.
pub(crate) enum Routed {
    /// Queued; `dropped` older events were dropped to make room.
    Delivered { dropped: u64 },
    /// A queue is full under the backpressure policy: wait for room on it,
    /// then route the event again, skipping the given number of queues that
    /// already have it.
    Blocked(Arc<Queue>, Box<ServerEvent>, usize),
}

impl Inbound {
    pub(crate) fn new(max_events: usize, max_bytes: usize, policy: InboundPolicy) -> Self {
        Inbound {
            main: Arc::new(Queue::new(max_events, max_bytes, policy)),
            subs: Mutex::new(Vec::new()),
            rpc: Mutex::new(Vec::new()),
            max_events,
            max_bytes,
            policy,
        }
    }

    pub(crate) fn subscribe(&self, pattern: &str) -> Arc<Queue> {
        let q = Arc::new(Queue::new(self.max_events, self.max_bytes, self.policy));
        if self.main.is_closed() {
            q.close();
        }
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|(_, w)| w.strong_count() > 0);
        subs.push((Pattern::new(pattern), Arc::downgrade(&q)));
        q
    }

    pub(crate) fn add_rpc_handler(&self, pattern: &str, handler: RpcHandler) {
        self.rpc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Pattern::new(pattern), handler));
    }

    pub(crate) fn rpc_handler_for(&self, etype: &str) -> Option<RpcHandler> {
        self.rpc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(p, _)| p.matches(etype))
            .map(|(_, h)| h.clone())
    }

    /// Routes an event. Under the backpressure policy, a full queue stops
    /// routing at that queue (queues before it in line already got theirs);
    /// the caller waits and routes again to the remaining ones.
    pub(crate) fn route(&self, ev: ServerEvent, skip_first: usize) -> Routed {
        let targets: Vec<Arc<Queue>> = {
            let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.iter()
                .filter(|(p, _)| p.matches(ev.etype()))
                .filter_map(|(_, w)| w.upgrade())
                .filter(|q| !q.is_closed())
                .collect()
        };
        let targets = if targets.is_empty() {
            vec![self.main.clone()]
        } else {
            targets
        };
        let mut dropped = 0;
        for (i, q) in targets.into_iter().enumerate().skip(skip_first) {
            match q.push(ev.clone()) {
                Pushed::Queued { dropped: d } => dropped += d,
                Pushed::Closed => {}
                Pushed::Full(ev) => return Routed::Blocked(q, ev, i),
            }
        }
        Routed::Delivered { dropped }
    }

    /// Closes every queue: readers drain, then see the end.
    pub(crate) fn close_all(&self) {
        self.main.close();
        for (_, w) in self.subs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(q) = w.upgrade() {
                q.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        let p = Pattern::new;
        assert!(p("UPSERT").matches("UPSERT"));
        assert!(!p("UPSERT").matches("UPSERTS"));
        assert!(p("*").matches(""));
        assert!(p("GRAB_*").matches("GRAB_RENDER"));
        assert!(p("*_RESPONSE@*").matches("GRAB_RENDER_RESPONSE@u"));
        assert!(p("S?T").matches("SET"));
        assert!(!p("S?T").matches("SEET"));
        assert!(p("a*b*c").matches("aXXbYYc"));
        assert!(!p("a*b*c").matches("aXXbYY"));
        assert!(p("*_MOVE").matches("HAND_MOVE"));
        assert!(!p("S?T").matches("ST"));
        assert!(etype_matches("*A*B", "xxAyyB"));
    }

    fn ev(etype: &str) -> ServerEvent {
        let v = crate::Value::map([("etype", crate::Value::from(etype))]);
        ServerEvent::from_msgpack(v.to_msgpack().into()).unwrap()
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let q = Queue::new(2, 1 << 20, InboundPolicy::DropOldest);
        for e in ["A", "B", "C"] {
            q.push(ev(e));
        }
        assert_eq!(q.try_pop().unwrap().etype(), "B");
        assert_eq!(q.try_pop().unwrap().etype(), "C");
    }

    #[test]
    fn backpressure_hands_the_event_back() {
        let q = Queue::new(1, 1 << 20, InboundPolicy::Backpressure);
        assert!(matches!(q.push(ev("A")), Pushed::Queued { .. }));
        assert!(matches!(q.push(ev("B")), Pushed::Full(_)));
    }

    fn sized(etype: &str, pad: usize) -> ServerEvent {
        let v = crate::Value::map([
            ("etype", crate::Value::from(etype)),
            ("pad", crate::Value::Bin(vec![0; pad])),
        ]);
        ServerEvent::from_msgpack(v.to_msgpack().into()).unwrap()
    }

    #[test]
    fn room_waits_until_the_refused_event_fits() {
        use futures_util::FutureExt;
        // Room for more events but not for the next one's bytes: `room`
        // must not return (the decoder would spin on push and room).
        let q = Queue::new(100, 1000, InboundPolicy::Backpressure);
        assert!(matches!(q.push(sized("A", 600)), Pushed::Queued { .. }));
        let b = sized("B", 500);
        let size = b.len();
        let Pushed::Full(b) = q.push(b) else {
            panic!("expected Full")
        };
        assert!(q.room(size).now_or_never().is_none());
        q.try_pop().unwrap();
        assert!(q.room(size).now_or_never().is_some());
        assert!(matches!(q.push(*b), Pushed::Queued { .. }));
        // An event bigger than the whole queue fits once the queue is empty.
        let huge = sized("H", 5000);
        let size = huge.len();
        let Pushed::Full(_) = q.push(huge) else {
            panic!("expected Full")
        };
        assert!(q.room(size).now_or_never().is_none());
        q.try_pop().unwrap();
        assert!(q.room(size).now_or_never().is_some());
        // Closing wakes waiters for good.
        q.push(sized("C", 10));
        assert!(q.room(size).now_or_never().is_none());
        q.close();
        assert!(q.room(size).now_or_never().is_some());
    }

    #[test]
    fn subscriptions_take_their_events_and_the_rest_go_to_main() {
        let inb = Inbound::new(16, 1 << 20, InboundPolicy::DropOldest);
        let sub = inb.subscribe("UP*");
        inb.route(ev("UPSERT"), 0);
        inb.route(ev("SET"), 0);
        assert_eq!(sub.try_pop().unwrap().etype(), "UPSERT");
        assert_eq!(inb.main.try_pop().unwrap().etype(), "SET");
        assert!(inb.main.try_pop().is_err());
        drop(sub);
        inb.route(ev("UPSERT"), 0);
        assert_eq!(inb.main.try_pop().unwrap().etype(), "UPSERT");
    }
}
