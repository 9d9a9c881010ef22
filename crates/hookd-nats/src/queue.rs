//! The delivery queue on JetStream: one durable pull consumer per plugin, shared by every
//! instance. What this instance fetched and has not finished is *held*: leased to it (the
//! lease renewed with `Progress`), answered by `due` until an outcome is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::{HeaderMap, Subject};
use futures_util::StreamExt;
use hookd_storage::{
    AttemptRecord, AttemptResult, Claim, DueDelivery, PluginDeliveries, StorageError, now_ms,
};
use tracing::{debug, warn};

use crate::consumers::configured_filters;
use crate::dead::{bury, dead_counts};
use crate::names::unescape_header;
use crate::state::{DeliveryState, WriteState, read_state, state_key, write_state};
use crate::{Inner, failed, header, lock};

/// Held deliveries' payloads, in all, past which this instance fetches no more.
const HELD_MAX_BYTES: usize = 64 << 20;
/// The longest error text kept with a delivery or a dead letter.
const MAX_ERROR_BYTES: usize = 4096;
/// A delivery this instance fetched and leases.
pub(crate) struct Held {
    /// The reply subject of its latest delivery: acks, naks and lease renewals go there.
    pub(crate) reply: Subject,
    pub(crate) generation: u64,
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) payload: String,
    pub(crate) received_at_ms: i64,
    pub(crate) state: DeliveryState,
    /// The state's revision in the deliveries bucket (0: never written).
    pub(crate) revision: u64,
    /// Claimed and not yet recorded: the plugin runs.
    pub(crate) running: bool,
}

impl Held {
    fn due(&self, plugin: &str, seq: i64) -> DueDelivery {
        DueDelivery {
            event_seq: seq,
            plugin: plugin.to_owned(),
            attempts: self.state.attempts,
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
            received_at_ms: self.received_at_ms,
            updated_at_ms: self.state.updated_at_ms,
            started: self.state.started,
            claimed_by: self.state.by,
        }
    }
}

/// Renews the leases of held deliveries until the backend goes.
pub(crate) async fn keep_leases(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => (i.config.ack_wait / 3).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let replies: Vec<Subject> = lock(&inner.held)
            .values()
            .map(|h| h.reply.clone())
            .collect();
        inner.metrics.held.set(replies.len() as i64);
        for reply in replies {
            send_ack(&inner, &reply, AckKind::Progress).await;
        }
    }
}

pub(crate) fn acker(inner: &Inner, reply: &Subject) -> Acker {
    Acker::new(inner.js.clone(), Some(reply.clone()))
}

/// Sends an ack of `kind` without waiting for the server's answer; lost, the lease runs out
/// and the message comes back, which every caller handles. Bounded: a client cut off from
/// NATS holds publishes in a buffer, and a full one would stall the dispatcher.
async fn send_ack(inner: &Inner, reply: &Subject, kind: AckKind) {
    let acker = acker(inner, reply);
    let sent = tokio::time::timeout(inner.config.request_timeout, acker.ack_with(kind)).await;
    if !matches!(sent, Ok(Ok(()))) {
        debug!("an ack was not sent; its lease will run out");
    }
}

/// Gives back (nak, at once) held deliveries that `release` picks and that no plugin runs,
/// so that another instance takes them now rather than after their lease.
pub(crate) async fn release_held(inner: &Inner, release: impl Fn(&str) -> bool) {
    let released: Vec<Subject> = {
        let mut held = lock(&inner.held);
        let keys: Vec<(String, i64)> = held
            .iter()
            .filter(|((plugin, _), h)| !h.running && release(plugin))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| held.remove(k))
            .map(|h| h.reply)
            .collect()
    };
    for reply in released {
        send_ack(inner, &reply, AckKind::Nak(None)).await;
    }
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

pub(crate) fn header_num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_str(headers, name)?.parse().ok()
}

/// What a fetched message is, read from its subject and headers.
struct Fetched {
    seq: i64,
    generation: u64,
    event_id: String,
    event_type: String,
    received_at_ms: i64,
    due_ms: i64,
}

fn parse_fetched(
    inner: &Inner,
    plugin: &str,
    subject: &str,
    headers: &HeaderMap,
    stream_seq: u64,
) -> Option<Result<Fetched, ()>> {
    let replay = subject == inner.names.replay_subject(plugin);
    if !replay {
        let named = header_str(headers, header::PLUGINS)?
            .split(',')
            .any(|p| p == plugin);
        if !named {
            return None;
        }
    }
    let parsed = (|| {
        let received_at_ms: i64 = header_num(headers, header::RECEIVED_MS)?;
        let (seq, generation, due_ms) = if replay {
            (
                header_num(headers, header::SEQ)?,
                header_num(headers, header::GEN)?,
                header_num(headers, header::DUE_MS)?,
            )
        } else {
            (i64::try_from(stream_seq).ok()?, 0, received_at_ms)
        };
        Some(Fetched {
            seq,
            generation,
            event_id: unescape_header(header_str(headers, header::ID)?)?,
            event_type: unescape_header(header_str(headers, header::TYPE)?)?,
            received_at_ms,
            due_ms,
        })
    })();
    Some(parsed.ok_or(()))
}

/// Takes one fetched message into the held set, or settles it at once: not this plugin's
/// (ack), malformed (term), dead already (finish what a crash interrupted), or back early
/// from a retry (nak until its time).
async fn admit(inner: &Inner, plugin: &str, message: async_nats::jetstream::Message) {
    let (stream_seq, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(e) => {
            warn!(error = %e, plugin, "a delivery without JetStream metadata; skipped");
            return;
        }
    };
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let empty = HeaderMap::new();
    let headers = message.headers.as_ref().unwrap_or(&empty);
    let fetched = match parse_fetched(inner, plugin, message.subject.as_str(), headers, stream_seq)
    {
        None => {
            // Another plugin's event on a filter wider than this plugin's patterns.
            send_ack(inner, &reply, AckKind::Ack).await;
            return;
        }
        Some(Err(())) => {
            warn!(
                plugin,
                subject = %message.subject,
                stream_seq,
                "a message hookd did not write is on its stream; ended without delivery"
            );
            send_ack(inner, &reply, AckKind::Term).await;
            return;
        }
        Some(Ok(f)) => f,
    };
    let key = (plugin.to_owned(), fetched.seq);
    if let Some(h) = lock(&inner.held).get_mut(&key) {
        // Our own lease ran out and came back to us: the newest reply subject wins.
        h.reply = reply;
        return;
    }
    let Ok(payload) = String::from_utf8(message.payload.to_vec()) else {
        warn!(
            plugin,
            stream_seq, "an event payload that is not UTF-8; ended without delivery"
        );
        send_ack(inner, &reply, AckKind::Term).await;
        return;
    };
    let (mut state, mut revision) = (None, 0);
    if delivered > 1 {
        inner
            .metrics
            .redeliveries
            .get_or_create(&crate::metrics::PluginLabel {
                plugin: plugin.to_owned(),
            })
            .inc();
        match read_state(
            inner,
            &state_key(plugin, fetched.seq as u64, fetched.generation),
        )
        .await
        {
            Ok((s, r)) => (state, revision) = (s, r),
            Err(e) => {
                // Not knowing its attempts, leave it for the lease to bring back.
                warn!(error = %e, plugin, "cannot read a redelivered delivery's state");
                return;
            }
        }
    }
    let state = state.unwrap_or_else(|| DeliveryState::fresh(fetched.due_ms));
    let held = Held {
        reply,
        generation: fetched.generation,
        event_id: fetched.event_id,
        event_type: fetched.event_type,
        payload,
        received_at_ms: fetched.received_at_ms,
        state,
        revision,
        running: false,
    };
    if held.state.dead {
        let error = held.state.last_error.clone().unwrap_or_default();
        if let Err(e) = bury(inner, plugin, fetched.seq, &held, &error).await {
            warn!(error = %e, plugin, "cannot finish a dead letter; will try again");
        }
        return;
    }
    let early = held.state.next_at_ms - now_ms();
    if early > (inner.config.ack_wait / 2).as_millis() as i64 {
        send_ack(
            inner,
            &held.reply,
            AckKind::Nak(Some(Duration::from_millis(early as u64))),
        )
        .await;
        return;
    }
    lock(&inner.held).insert(key, held);
}

pub(crate) async fn due(
    inner: &Arc<Inner>,
    now_ms: i64,
    plugins: Vec<String>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<DueDelivery>, StorageError> {
    if inner.is_closed() {
        return Err(StorageError::Closed);
    }
    // Deliveries of plugins no longer asked for (unloaded here) go back to the others.
    release_held(inner, |p| !plugins.iter().any(|q| q == p)).await;
    if plugins.is_empty() {
        return Ok(Vec::new());
    }
    let fetches = plugins.iter().map(|plugin| async move {
        let (count, bytes) = {
            let held = lock(&inner.held);
            let count = held.keys().filter(|(p, _)| p == plugin).count();
            (count, held.values().map(|h| h.payload.len()).sum::<usize>())
        };
        let room = inner.config.prefetch.saturating_sub(count);
        if room == 0 || bytes >= HELD_MAX_BYTES {
            return Ok(());
        }
        let Some(handle) = inner.consumers.existing(inner, plugin).await? else {
            return Ok(());
        };
        // A fetch answers at once (no wait), but that answer can be lost (a node restarting
        // mid-request), and the client would wait for it for good: give up after a while.
        // (No `expires`: with it, the server holds an empty fetch open until it passes.)
        let fetched = tokio::time::timeout(inner.config.request_timeout, async {
            let mut batch = handle
                .consumer
                .fetch()
                .max_messages(room)
                .messages()
                .await
                .map_err(|e| failed("cannot fetch deliveries", e))?;
            while let Some(message) = batch.next().await {
                match message {
                    Ok(m) => admit(inner, plugin, m).await,
                    Err(e) => {
                        debug!(error = %e, plugin, "fetch ended");
                        break;
                    }
                }
            }
            Ok::<(), StorageError>(())
        })
        .await;
        match fetched {
            Ok(result) => result,
            Err(_) => Err(failed(
                "cannot fetch deliveries",
                "no answer from JetStream",
            )),
        }
    });
    for result in futures_util::future::join_all(fetches).await {
        result?;
    }
    let held = lock(&inner.held);
    let mut due: Vec<(&(String, i64), &Held)> = held
        .iter()
        .filter(|((p, _), h)| h.state.next_at_ms <= now_ms && plugins.iter().any(|q| q == p))
        .collect();
    due.sort_by_key(|((_, seq), h)| (h.state.next_at_ms, *seq));
    let mut answer = Vec::new();
    let mut bytes = 0usize;
    for ((plugin, seq), h) in due.into_iter().take(limit) {
        if !answer.is_empty() && bytes.saturating_add(h.payload.len()) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(h.payload.len());
        answer.push(h.due(plugin, *seq));
    }
    Ok(answer)
}

/// Runs `run` on every item: items of different deliveries at once (each is a round trip to
/// JetStream), those of one delivery in their order.
async fn per_delivery<T, Fut>(
    items: Vec<T>,
    key: impl Fn(&T) -> (String, i64),
    run: impl Fn(T) -> Fut,
) -> Result<(), StorageError>
where
    Fut: std::future::Future<Output = Result<(), StorageError>>,
{
    let mut index: HashMap<(String, i64), usize> = HashMap::new();
    let mut groups: Vec<Vec<T>> = Vec::new();
    for item in items {
        match index.entry(key(&item)) {
            std::collections::hash_map::Entry::Occupied(at) => groups[*at.get()].push(item),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(vec![item]);
            }
        }
    }
    let run = &run;
    let results = futures_util::future::join_all(groups.into_iter().map(|group| async move {
        for item in group {
            run(item).await?;
        }
        Ok::<(), StorageError>(())
    }))
    .await;
    results.into_iter().collect()
}

pub(crate) async fn claim(inner: &Inner, claims: Vec<Claim>) -> Result<(), StorageError> {
    per_delivery(
        claims,
        |c| (c.plugin.clone(), c.event_seq),
        |c| claim_one(inner, c),
    )
    .await
}

pub(crate) async fn record(inner: &Inner, records: Vec<AttemptRecord>) -> Result<(), StorageError> {
    per_delivery(
        records,
        |r| (r.plugin.clone(), r.event_seq),
        |r| record_one(inner, r),
    )
    .await
}

/// A held delivery's reply, state and revision, copied out of the lock.
fn snapshot(inner: &Inner, plugin: &str, seq: i64) -> Option<(Subject, DeliveryState, u64, u64)> {
    lock(&inner.held)
        .get(&(plugin.to_owned(), seq))
        .map(|h| (h.reply.clone(), h.state.clone(), h.revision, h.generation))
}

async fn claim_one(inner: &Inner, c: Claim) -> Result<(), StorageError> {
    {
        // Not held here: another instance has it, or it is finished.
        let Some((reply, state, revision, generation)) = snapshot(inner, &c.plugin, c.event_seq)
        else {
            return Ok(());
        };
        let key = (c.plugin.clone(), c.event_seq);
        let next = DeliveryState {
            started: c.started,
            by: Some(c.by),
            ..state
        };
        let skey = state_key(&c.plugin, c.event_seq as u64, generation);
        match write_state(inner, &skey, &next, revision).await? {
            WriteState::Conflict => {
                lock(&inner.held).remove(&key);
            }
            WriteState::Written(rev) => {
                let take_back = next.started <= next.attempts;
                if take_back {
                    lock(&inner.held).remove(&key);
                    acker(inner, &reply)
                        .double_ack_with(AckKind::Nak(None))
                        .await
                        .map_err(|e| failed("cannot give a delivery back", e))?;
                } else {
                    if let Some(h) = lock(&inner.held).get_mut(&key) {
                        h.state = next;
                        h.revision = rev;
                        h.running = true;
                    }
                    send_ack(inner, &reply, AckKind::Progress).await;
                }
            }
        }
    }
    Ok(())
}

fn capped(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

async fn record_one(inner: &Inner, r: AttemptRecord) -> Result<(), StorageError> {
    {
        let Some((reply, state, revision, generation)) = snapshot(inner, &r.plugin, r.event_seq)
        else {
            return Ok(());
        };
        let key = (r.plugin.clone(), r.event_seq);
        let skey = state_key(&r.plugin, r.event_seq as u64, generation);
        let attempts = state.attempts.saturating_add(1);
        match r.result {
            AttemptResult::Done => {
                acker(inner, &reply)
                    .double_ack()
                    .await
                    .map_err(|e| failed("cannot acknowledge a delivery", e))?;
                lock(&inner.held).remove(&key);
            }
            AttemptResult::Retry {
                next_attempt_at_ms,
                error,
            } => {
                let next = DeliveryState {
                    attempts,
                    started: state.started.max(attempts),
                    next_at_ms: next_attempt_at_ms,
                    updated_at_ms: r.at_ms,
                    last_error: Some(capped(&error)),
                    ..state
                };
                let rev = match write_state(inner, &skey, &next, revision).await? {
                    WriteState::Conflict => {
                        lock(&inner.held).remove(&key);
                        return Ok(());
                    }
                    WriteState::Written(rev) => rev,
                };
                let wait = next_attempt_at_ms - now_ms();
                if wait <= (inner.config.ack_wait / 2).as_millis() as i64 {
                    if let Some(h) = lock(&inner.held).get_mut(&key) {
                        h.state = next;
                        h.revision = rev;
                        h.running = false;
                    }
                } else {
                    lock(&inner.held).remove(&key);
                    // Lost, the lease runs out and `admit` naks it again from its state.
                    send_ack(
                        inner,
                        &reply,
                        AckKind::Nak(Some(Duration::from_millis(wait as u64))),
                    )
                    .await;
                }
            }
            AttemptResult::Dead { error } => {
                let error = capped(&error);
                let next = DeliveryState {
                    attempts,
                    started: state.started.max(attempts),
                    updated_at_ms: r.at_ms,
                    last_error: Some(error.clone()),
                    dead: true,
                    ..state
                };
                let rev = match write_state(inner, &skey, &next, revision).await? {
                    WriteState::Conflict => {
                        lock(&inner.held).remove(&key);
                        return Ok(());
                    }
                    WriteState::Written(rev) => rev,
                };
                let buried = {
                    let mut held = lock(&inner.held);
                    let Some(h) = held.get_mut(&key) else {
                        return Ok(());
                    };
                    h.state = next;
                    h.revision = rev;
                    Held {
                        reply: h.reply.clone(),
                        generation: h.generation,
                        event_id: h.event_id.clone(),
                        event_type: h.event_type.clone(),
                        payload: h.payload.clone(),
                        received_at_ms: h.received_at_ms,
                        state: h.state.clone(),
                        revision: rev,
                        running: true,
                    }
                };
                bury(inner, &r.plugin, r.event_seq, &buried, &error).await?;
                lock(&inner.held).remove(&key);
            }
        }
    }
    Ok(())
}

/// When `plugin`'s first message after its ack floor came (or comes) due, unless this
/// instance holds it (then its own state says).
async fn first_unacked_due(inner: &Inner, plugin: &str, info: &consumer::Info) -> Option<i64> {
    let from = info.ack_floor.stream_sequence + 1;
    let mut first: Option<async_nats::jetstream::message::StreamMessage> = None;
    for filter in configured_filters(&info.config) {
        if let Ok(m) = inner
            .events
            .direct_get_next_for_subject(filter, Some(from))
            .await
            && first.as_ref().is_none_or(|f| m.sequence < f.sequence)
        {
            first = Some(m);
        }
    }
    let m = first?;
    let fetched = parse_fetched(inner, plugin, m.subject.as_str(), &m.headers, m.sequence)?.ok()?;
    if lock(&inner.held).contains_key(&(plugin.to_owned(), fetched.seq)) {
        return None;
    }
    let key = state_key(plugin, fetched.seq as u64, fetched.generation);
    match read_state(inner, &key).await {
        Ok((Some(state), _)) => Some(state.next_at_ms),
        _ => Some(fetched.due_ms),
    }
}

pub(crate) async fn open_deliveries(inner: &Inner) -> Result<Vec<PluginDeliveries>, StorageError> {
    let mut rows: HashMap<String, PluginDeliveries> = HashMap::new();
    let mut names = inner.events.consumer_names();
    let mut consumers = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| failed("cannot list the plugins' consumers", e))?;
        if let Some(plugin) = inner.names.consumer_plugin(&name) {
            consumers.push((plugin.to_owned(), name));
        }
    }
    for (plugin, name) in consumers {
        let info = inner
            .events
            .consumer_info(&name)
            .await
            .map_err(|e| failed("cannot read a plugin's consumer", e))?;
        let (mine, mine_due) = {
            let held = lock(&inner.held);
            let mine: Vec<i64> = held
                .iter()
                .filter(|((p, _), _)| *p == plugin)
                .map(|(_, h)| h.state.next_at_ms)
                .collect();
            (mine.len(), mine.into_iter().min())
        };
        let pending = info.num_pending + info.num_ack_pending as u64;
        inner
            .metrics
            .consumer_pending
            .get_or_create(&crate::metrics::PluginLabel {
                plugin: plugin.clone(),
            })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        let others_due = if info.num_pending > 0 || info.num_ack_pending > mine {
            first_unacked_due(inner, &plugin, &info).await
        } else {
            None
        };
        let oldest_due_ms = match (mine_due, others_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        rows.insert(
            plugin.clone(),
            PluginDeliveries {
                plugin,
                pending,
                dead: 0,
                oldest_due_ms: if pending > 0 { oldest_due_ms } else { None },
            },
        );
    }
    for (plugin, count) in dead_counts(inner).await? {
        rows.entry(plugin.clone())
            .or_insert_with(|| PluginDeliveries {
                plugin,
                pending: 0,
                dead: 0,
                oldest_due_ms: None,
            })
            .dead = count;
    }
    let mut rows: Vec<PluginDeliveries> = rows.into_values().collect();
    rows.sort_by(|a, b| a.plugin.cmp(&b.plugin));
    Ok(rows)
}
