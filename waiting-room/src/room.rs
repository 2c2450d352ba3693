//! The room state machine: tickets, the admission cursor, turn windows, active sessions and the
//! closed-loop rate. See the crate docs for the design and its guarantees.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::{QueueingMethod, RoomConfig};
use crate::shuffle::Shuffle;

/// Width of a call batch: turns called within the same second share one deadline.
pub const CALL_BUCKET_MS: u64 = 1000;

/// Most ranks that may be called and not yet resolved at once (claimed-or-forfeited ranks are
/// resolved when their batch's turn window closes). This bounds the claimed-bits window to
/// 32 KiB. [`RoomConfig::from_toml`] rejects rates and abandon timeouts that would need more.
pub const MAX_PENDING_RANKS: u64 = 1 << 18;

/// Most time one healthy report counts for in the additive increase.
pub const MAX_INCREASE_STEP_MS: u64 = 15_000;

/// Most rate changes kept in the room's log (older ones are dropped; phase changes are kept).
pub const MAX_LOGGED_RATE_CHANGES: usize = 64;

/// A place in line. The edge signs it into the shopper's ticket cookie
/// ([`crate::token::Keys::sign_ticket`]) and hands it back to [`Room::poll`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Room id.
    pub room: String,
    /// Sequence number, from 1, in order of joining.
    pub seq: u64,
    /// When it was issued (Unix ms).
    pub issued_at: u64,
    /// How far the line had been called when this ticket was issued; the progress bar's
    /// starting point.
    pub cursor_at_join: u64,
}

/// The answer to a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PollOutcome {
    /// Joining has not opened yet.
    NotOpen {
        /// When joining opens (Unix ms).
        opens_at: u64,
    },
    /// Joined before the sale; the order is drawn when the sale starts.
    PreQueue {
        /// When the sale starts (Unix ms).
        sale_starts_at: u64,
        /// Shoppers in the pre-queue so far.
        queued: u64,
    },
    /// In line.
    Waiting {
        /// 1 = next to be called.
        position: u64,
        /// Estimate at the current rate (an upper bound when some shoppers ahead leave).
        estimated_wait_secs: u64,
        /// Progress since joining, 0..=1000.
        progress_permille: u16,
    },
    /// Admitted: sign an admission token that expires at `session_expires_at`.
    Admitted {
        /// End of the session (Unix ms).
        session_expires_at: u64,
    },
    /// The turn was called and not claimed within the abandon timeout; the place is gone.
    Expired,
    /// The sale is over.
    Closed,
}

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Joining has not opened.
    #[error("the waiting room opens at {opens_at} (Unix ms)")]
    NotOpen {
        /// When joining opens (Unix ms).
        opens_at: u64,
    },
    /// The sale is over.
    #[error("the sale is over")]
    Closed,
}

/// Why a poll was refused. The ticket's signature is checked before (see [`crate::token`]);
/// these catch tickets that are genuine but do not belong to this room's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The ticket names another room.
    #[error("ticket is for room `{0}`")]
    WrongRoom(String),
    /// The room never issued this sequence number.
    #[error("ticket {0} was never issued by this room")]
    UnknownTicket(u64),
    /// The ticket predates this room's state (the room was reset).
    #[error("ticket predates this room's state")]
    StaleTicket,
}

/// Why saved state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The saved text is not a room state.
    #[error("saved room state is unreadable: {0}")]
    Corrupt(String),
    /// The state belongs to another room id.
    #[error("saved state is for room `{saved}`, config is for `{config}`")]
    WrongRoom {
        /// Room id in the state.
        saved: String,
        /// Room id in the config.
        config: String,
    },
}

/// The origin's health as the origin proxy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OriginHealth {
    /// 99th percentile upstream latency over the report's window, ms.
    pub p99_latency_ms: u32,
    /// Share of 5xx responses over the window, 0.0-1.0.
    pub error_rate_5xx: f64,
    /// Requests shed (503 + Retry-After) over the window.
    pub shed_count: u64,
}

/// Phase of the event schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the pre-queue opens.
    NotOpen,
    /// Joining is open; admission has not started.
    PreQueue,
    /// Admitting.
    Open,
    /// Over.
    Closed,
}

/// One entry of the room's log: what an auditor needs to replay the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum LogEntry {
    /// The pre-queue opened.
    PreQueueOpened {
        /// Unix ms.
        at: u64,
    },
    /// The sale started; with `shuffled`, the order of the first `pre_queue_len` tickets is
    /// `Shuffle::new(seed, pre_queue_len)`: ticket `s` gets rank `apply(s - 1) + 1`.
    SaleStarted {
        /// Unix ms.
        at: u64,
        /// The shuffle seed.
        seed: u64,
        /// Tickets issued before the start.
        pre_queue_len: u64,
        /// Whether the pre-queue was shuffled.
        shuffled: bool,
    },
    /// The sale ended.
    SaleEnded {
        /// Unix ms.
        at: u64,
    },
    /// The closed loop changed the rate.
    RateChanged {
        /// Unix ms.
        at: u64,
        /// Old rate per minute.
        from: u32,
        /// New rate per minute.
        to: u32,
    },
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    /// Tickets issued.
    pub issued: u64,
    /// Highest rank called so far (0 = none).
    pub called_through: u64,
    /// Shoppers not yet called.
    pub waiting: u64,
    /// Called, not yet claimed, turn still open.
    pub pending: u64,
    /// Live sessions (counted conservatively, to the end of their expiry bucket).
    pub active: u64,
    /// Admissions (first claims).
    pub admitted: u64,
    /// Turns that passed unclaimed.
    pub forfeited: u64,
    /// Polls by tickets already admitted within their turn window.
    pub reclaims: u64,
    /// Current admission rate, per minute.
    pub rate_per_minute: u32,
}

/// A run of consecutive ranks called within the same call bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch {
    /// Last rank in the batch (inclusive); the first is the previous batch's end + 1, or the
    /// floor.
    end: u64,
    /// `called_at / CALL_BUCKET_MS`.
    bucket: u64,
    /// Ranks in the batch that claimed.
    claimed: u64,
    /// Earliest claim in the batch (Unix ms).
    first_claim_at: Option<u64>,
}

/// One bit per rank in `[base, base + 64 * words.len())`: claimed or not. Persisted as
/// `{ "base": n, "bits": "<base64 of little-endian words>" }` to keep the stored value small
/// (at most 32 KiB of bits, 43 KiB of text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BitWindowRepr", try_from = "BitWindowRepr")]
struct BitWindow {
    base: u64,
    words: VecDeque<u64>,
}

#[derive(Serialize, Deserialize)]
struct BitWindowRepr {
    base: u64,
    bits: String,
}

impl From<BitWindow> for BitWindowRepr {
    fn from(w: BitWindow) -> Self {
        use base64::Engine as _;
        let bytes: Vec<u8> = w.words.iter().flat_map(|x| x.to_le_bytes()).collect();
        BitWindowRepr {
            base: w.base,
            bits: base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
        }
    }
}

impl TryFrom<BitWindowRepr> for BitWindow {
    type Error = String;

    fn try_from(r: BitWindowRepr) -> Result<Self, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(r.bits)
            .map_err(|e| format!("claimed bits: {e}"))?;
        if bytes.len() % 8 != 0 || bytes.len() as u64 > MAX_PENDING_RANKS / 8 + 16 {
            return Err("claimed bits: bad length".to_string());
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Ok(BitWindow {
            base: r.base,
            words,
        })
    }
}

impl BitWindow {
    fn extend_to(&mut self, rank: u64) {
        if self.words.is_empty() {
            self.base = rank / 64 * 64;
        }
        while self.base + 64 * self.words.len() as u64 <= rank {
            self.words.push_back(0);
        }
    }

    fn locate(&self, rank: u64) -> Option<(usize, u64)> {
        let i = rank.checked_sub(self.base)?;
        let w = usize::try_from(i / 64).ok()?;
        (w < self.words.len()).then_some((w, 1u64 << (i % 64)))
    }

    fn get(&self, rank: u64) -> bool {
        self.locate(rank)
            .is_some_and(|(w, bit)| self.words[w] & bit != 0)
    }

    fn set(&mut self, rank: u64) {
        if let Some((w, bit)) = self.locate(rank) {
            self.words[w] |= bit;
        }
    }

    fn drop_below(&mut self, floor: u64) {
        while !self.words.is_empty() && self.base + 64 <= floor {
            self.words.pop_front();
            self.base += 64;
        }
        if self.words.is_empty() {
            self.base = floor / 64 * 64;
        }
    }
}

/// Live sessions counted by expiry bucket: `(bucket, count)`, buckets ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ActiveRing {
    bucket_ms: u64,
    buckets: VecDeque<(u64, u64)>,
    total: u64,
}

impl ActiveRing {
    fn add(&mut self, expires_at: u64) {
        let b = expires_at / self.bucket_ms;
        self.total += 1;
        match self.buckets.back_mut() {
            // A session can only end in an earlier bucket than the newest one if the session
            // length was shortened between restores; counting it later is the safe side.
            Some((last, count)) if *last >= b => *count += 1,
            _ => self.buckets.push_back((b, 1)),
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(b, count)) = self.buckets.front() {
            if (b + 1).saturating_mul(self.bucket_ms) > now {
                break;
            }
            self.total = self.total.saturating_sub(count);
            self.buckets.pop_front();
        }
    }
}

/// Everything the Durable Object persists. O(1) in the number of shoppers: the bounds are in
/// the crate docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomState {
    room: String,
    created_at: u64,
    seed: u64,
    last_now: u64,
    phase: Phase,
    next_seq: u64,
    pre_queue_len: u64,
    shuffle: Option<Shuffle>,
    called_through: u64,
    floor: u64,
    batches: VecDeque<Batch>,
    claimed: BitWindow,
    pending_unclaimed: u64,
    active: ActiveRing,
    credits: u64,
    credit_frac: u64,
    accrued_to: u64,
    rate_per_minute: u32,
    increase_frac: u64,
    last_increase_at: u64,
    last_decrease_at: Option<u64>,
    admitted: u64,
    forfeited: u64,
    reclaims: u64,
    log: Vec<LogEntry>,
}

/// One waiting room: its validated config and its state.
#[derive(Debug, Clone)]
pub struct Room {
    config: RoomConfig,
    state: RoomState,
}

impl Room {
    /// A fresh room. `seed` draws the pre-queue order (the host takes it from a CSPRNG, e.g.
    /// `crypto.getRandomValues`, and it is recorded in the log at the sale start); `now` is
    /// the creation time: tickets issued before it are refused as stale.
    pub fn new(config: &RoomConfig, seed: u64, now: u64) -> Room {
        let rate = config.admitted_per_minute.clamp(
            config.closed_loop.min_per_minute,
            config.closed_loop.max_per_minute,
        );
        let state = RoomState {
            room: config.id.clone(),
            created_at: now,
            seed,
            last_now: now,
            phase: Phase::NotOpen,
            next_seq: 1,
            pre_queue_len: 0,
            shuffle: None,
            called_through: 0,
            floor: 1,
            batches: VecDeque::new(),
            claimed: BitWindow::default(),
            pending_unclaimed: 0,
            active: ActiveRing {
                bucket_ms: active_bucket_ms(config.session_ms),
                ..ActiveRing::default()
            },
            credits: 0,
            credit_frac: 0,
            accrued_to: config.sale_starts_ms,
            rate_per_minute: rate,
            increase_frac: 0,
            last_increase_at: now,
            last_decrease_at: None,
            admitted: 0,
            forfeited: 0,
            reclaims: 0,
            log: Vec::new(),
        };
        let mut room = Room {
            config: config.clone(),
            state,
        };
        room.tick(now);
        room
    }

    /// Rebuilds a room from persisted state. The config may have changed since (a new rate,
    /// new bounds): the rate is clamped into the new bounds.
    pub fn restore(config: &RoomConfig, mut state: RoomState) -> Result<Room, RestoreError> {
        if state.room != config.id {
            return Err(RestoreError::WrongRoom {
                saved: state.room,
                config: config.id.clone(),
            });
        }
        let consistent = state.next_seq >= 1
            && state.called_through < state.next_seq
            && state.floor >= 1
            && state.floor <= state.called_through + 1
            && state.pre_queue_len < state.next_seq
            && state.active.bucket_ms > 0
            && state
                .batches
                .back()
                .is_none_or(|b| b.end == state.called_through)
            && state.batches.front().is_none_or(|b| b.end >= state.floor);
        if !consistent {
            return Err(RestoreError::Corrupt(
                "inconsistent counters in saved room state".to_string(),
            ));
        }
        state.rate_per_minute = state.rate_per_minute.clamp(
            config.closed_loop.min_per_minute,
            config.closed_loop.max_per_minute,
        );
        Ok(Room {
            config: config.clone(),
            state,
        })
    }

    /// [`Room::restore`] from the JSON that [`Room::to_json`] wrote.
    pub fn from_json(config: &RoomConfig, json: &str) -> Result<Room, RestoreError> {
        let state: RoomState =
            serde_json::from_str(json).map_err(|e| RestoreError::Corrupt(e.to_string()))?;
        Room::restore(config, state)
    }

    /// The state as JSON, for the host's storage (a few KiB; at most about 60 KiB).
    pub fn to_json(&self) -> String {
        // A struct of integers, strings and sequences always serializes.
        serde_json::to_string(&self.state).unwrap_or_default()
    }

    /// The state to persist (serde).
    pub fn state(&self) -> &RoomState {
        &self.state
    }

    /// The config.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// The room's log: phase changes (with the shuffle seed) and the latest rate changes.
    pub fn log(&self) -> &[LogEntry] {
        &self.state.log
    }

    /// The schedule phase as of the last call.
    pub fn phase(&self) -> Phase {
        self.state.phase
    }

    /// Counters, after advancing to `now`.
    pub fn stats(&mut self, now: u64) -> RoomStats {
        self.tick(now);
        let s = &self.state;
        RoomStats {
            issued: s.next_seq - 1,
            called_through: s.called_through,
            waiting: (s.next_seq - 1).saturating_sub(s.called_through),
            pending: s.pending_unclaimed,
            active: s.active.total,
            admitted: s.admitted,
            forfeited: s.forfeited,
            reclaims: s.reclaims,
            rate_per_minute: s.rate_per_minute,
        }
    }

    /// Issues the next ticket.
    pub fn join(&mut self, now: u64) -> Result<Ticket, JoinError> {
        self.tick(now);
        match self.state.phase {
            Phase::NotOpen => {
                return Err(JoinError::NotOpen {
                    opens_at: self.config.pre_queue_opens_ms,
                })
            }
            Phase::Closed => return Err(JoinError::Closed),
            Phase::PreQueue | Phase::Open => {}
        }
        let s = &mut self.state;
        let ticket = Ticket {
            room: s.room.clone(),
            seq: s.next_seq,
            issued_at: s.last_now,
            cursor_at_join: s.called_through,
        };
        s.next_seq += 1;
        if s.phase == Phase::Open {
            self.call(self.state.last_now);
        }
        Ok(ticket)
    }

    /// Where this ticket stands; claims the turn (admits) when it has been called.
    pub fn poll(&mut self, ticket: &Ticket, now: u64) -> Result<PollOutcome, PollError> {
        if ticket.room != self.config.id {
            return Err(PollError::WrongRoom(ticket.room.clone()));
        }
        self.tick(now);
        let now = self.state.last_now;
        if ticket.seq == 0 || ticket.seq >= self.state.next_seq {
            return Err(PollError::UnknownTicket(ticket.seq));
        }
        if ticket.issued_at < self.state.created_at {
            return Err(PollError::StaleTicket);
        }
        let s = &mut self.state;
        match s.phase {
            Phase::NotOpen => {
                return Ok(PollOutcome::NotOpen {
                    opens_at: self.config.pre_queue_opens_ms,
                })
            }
            Phase::PreQueue => {
                return Ok(PollOutcome::PreQueue {
                    sale_starts_at: self.config.sale_starts_ms,
                    queued: s.next_seq - 1,
                })
            }
            Phase::Closed => return Ok(PollOutcome::Closed),
            Phase::Open => {}
        }
        let rank = self.rank_of(ticket.seq);
        let s = &mut self.state;
        if rank > s.called_through {
            let position = rank - s.called_through;
            let rate = u64::from(s.rate_per_minute.max(1));
            let estimated_wait_secs = position.saturating_mul(60).div_ceil(rate);
            let start = ticket.cursor_at_join.min(s.called_through);
            let span = rank.saturating_sub(start).max(1);
            let progress_permille = ((s.called_through - start) * 1000 / span).min(1000) as u16;
            return Ok(PollOutcome::Waiting {
                position,
                estimated_wait_secs,
                progress_permille,
            });
        }
        if rank < s.floor {
            return Ok(PollOutcome::Expired);
        }
        // rank is in the pending window [floor, called_through]: find its batch.
        let i = s.batches.partition_point(|b| b.end < rank);
        let Some(batch) = s.batches.get_mut(i) else {
            // Unreachable while the invariants hold; answer conservatively.
            return Ok(PollOutcome::Expired);
        };
        let session_ms = self.config.session_ms;
        if s.claimed.get(rank) {
            s.reclaims += 1;
            // Never later than the first admission's expiry, which the active count covers.
            let first = batch.first_claim_at.unwrap_or(now);
            return Ok(PollOutcome::Admitted {
                session_expires_at: first + session_ms,
            });
        }
        s.claimed.set(rank);
        batch.claimed += 1;
        batch.first_claim_at.get_or_insert(now);
        s.pending_unclaimed = s.pending_unclaimed.saturating_sub(1);
        s.admitted += 1;
        let expires = now + session_ms;
        s.active.add(expires);
        Ok(PollOutcome::Admitted {
            session_expires_at: expires,
        })
    }

    /// The rank (place in line, from 1) of ticket `seq`, once the sale has started.
    pub fn rank_of(&self, seq: u64) -> u64 {
        match &self.state.shuffle {
            Some(sh) if seq >= 1 && seq <= self.state.pre_queue_len => {
                sh.apply(seq - 1).map_or(seq, |r| r + 1)
            }
            _ => seq,
        }
    }

    /// The ticket at rank `rank` (inverse of [`Room::rank_of`]).
    pub fn seq_at(&self, rank: u64) -> u64 {
        match &self.state.shuffle {
            Some(sh) if rank >= 1 && rank <= self.state.pre_queue_len => {
                sh.invert(rank - 1).map_or(rank, |s| s + 1)
            }
            _ => rank,
        }
    }

    /// Feeds the origin's health into the admission rate (AIMD, see the crate docs). Returns
    /// the rate in force afterwards.
    pub fn observe_origin(&mut self, health: OriginHealth, now: u64) -> u32 {
        // Accrue at the old rate up to now, so the change applies from now on.
        self.tick(now);
        let now = self.state.last_now;
        let cl = &self.config.closed_loop;
        let s = &mut self.state;
        let hurting = health.p99_latency_ms > cl.target_p99_latency_ms
            || !health.error_rate_5xx.is_finite()
            || health.error_rate_5xx > cl.max_error_rate
            || health.shed_count > cl.max_shed_count;
        let old = s.rate_per_minute;
        let mut new = old;
        if hurting {
            let cooled = s
                .last_decrease_at
                .is_none_or(|t| now >= t.saturating_add(cl.decrease_cooldown_ms));
            if cooled {
                new = ((f64::from(old) * cl.decrease_factor).round() as u32).max(cl.min_per_minute);
                s.last_decrease_at = Some(now);
            }
            s.last_increase_at = now;
            s.increase_frac = 0;
        } else {
            // A silence between reports is not a healthy spell: at most 15 s count per report.
            let dt = now
                .saturating_sub(s.last_increase_at)
                .min(MAX_INCREASE_STEP_MS);
            let acc = s.increase_frac + dt * u64::from(cl.increase_per_minute);
            let inc = acc / 60_000;
            s.increase_frac = acc % 60_000;
            s.last_increase_at = now;
            let raised = u64::from(old) + inc;
            new = raised.min(u64::from(cl.max_per_minute)) as u32;
            if new == cl.max_per_minute {
                s.increase_frac = 0;
            }
        }
        if new != old {
            s.rate_per_minute = new;
            s.log.push(LogEntry::RateChanged {
                at: now,
                from: old,
                to: new,
            });
            let changes = s
                .log
                .iter()
                .filter(|e| matches!(e, LogEntry::RateChanged { .. }))
                .count();
            if changes > MAX_LOGGED_RATE_CHANGES {
                if let Some(i) = s
                    .log
                    .iter()
                    .position(|e| matches!(e, LogEntry::RateChanged { .. }))
                {
                    s.log.remove(i);
                }
            }
        }
        new
    }

    /// Advances the room to `now`: schedule phases, expired sessions, passed turns, credit
    /// accrual, and calling the next shoppers. Every other method calls it first; a host may
    /// also call it from an alarm. Time never goes back: an earlier `now` counts as the latest
    /// one seen.
    pub fn tick(&mut self, now: u64) {
        let now = now.max(self.state.last_now);
        self.state.last_now = now;
        self.advance_phase(now);
        if self.state.phase == Phase::NotOpen || self.state.phase == Phase::PreQueue {
            return;
        }
        self.state.active.expire(now);
        if self.state.phase == Phase::Closed {
            return;
        }
        self.forfeit(now);
        self.accrue(now);
        self.call(now);
    }

    fn advance_phase(&mut self, now: u64) {
        let c = &self.config;
        let s = &mut self.state;
        if s.phase == Phase::NotOpen && now >= c.pre_queue_opens_ms {
            s.phase = Phase::PreQueue;
            s.log.push(LogEntry::PreQueueOpened {
                at: c.pre_queue_opens_ms,
            });
        }
        if s.phase == Phase::PreQueue && now >= c.sale_starts_ms {
            s.phase = Phase::Open;
            s.pre_queue_len = s.next_seq - 1;
            let shuffled = c.queueing == QueueingMethod::PreQueueShuffle && s.pre_queue_len > 1;
            s.shuffle = shuffled.then(|| Shuffle::new(s.seed, s.pre_queue_len));
            s.accrued_to = c.sale_starts_ms;
            s.last_increase_at = c.sale_starts_ms;
            s.log.push(LogEntry::SaleStarted {
                at: c.sale_starts_ms,
                seed: s.seed,
                pre_queue_len: s.pre_queue_len,
                shuffled,
            });
        }
        if s.phase == Phase::Open && now >= c.sale_ends_ms {
            s.phase = Phase::Closed;
            s.log.push(LogEntry::SaleEnded { at: c.sale_ends_ms });
        }
    }

    fn burst(&self) -> u64 {
        u64::from(self.state.rate_per_minute) * self.config.poll_interval_ms / 60_000 + 1
    }

    fn accrue(&mut self, now: u64) {
        let burst = self.burst();
        let s = &mut self.state;
        if now <= s.accrued_to {
            return;
        }
        let dt = u128::from(now - s.accrued_to);
        s.accrued_to = now;
        let acc = u128::from(s.credit_frac) + dt * u128::from(s.rate_per_minute);
        let fresh = u64::try_from(acc / 60_000).unwrap_or(u64::MAX);
        s.credit_frac = (acc % 60_000) as u64;
        // Fresh credits fill up to the burst; returned credits (from passed turns) may sit
        // above it, so that none is lost while the line is long.
        if s.credits < burst {
            s.credits = s.credits.saturating_add(fresh).min(burst);
        }
    }

    fn forfeit(&mut self, now: u64) {
        let abandon = self.config.abandon_timeout_ms;
        let s = &mut self.state;
        while let Some(b) = s.batches.front() {
            let deadline = (b.bucket + 1) * CALL_BUCKET_MS + abandon;
            if now < deadline {
                break;
            }
            let size = (b.end + 1).saturating_sub(s.floor);
            let unclaimed = size.saturating_sub(b.claimed);
            s.credits = s.credits.saturating_add(unclaimed);
            s.pending_unclaimed = s.pending_unclaimed.saturating_sub(unclaimed);
            s.forfeited += unclaimed;
            s.floor = b.end + 1;
            s.batches.pop_front();
        }
        s.claimed.drop_below(s.floor);
    }

    fn call(&mut self, now: u64) {
        let burst = self.burst();
        let max_active = self.config.max_active;
        let s = &mut self.state;
        let issued = s.next_seq - 1;
        let waiting = issued.saturating_sub(s.called_through);
        let cap_room = max_active.saturating_sub(s.active.total + s.pending_unclaimed);
        let window_room =
            MAX_PENDING_RANKS.saturating_sub((s.called_through + 1).saturating_sub(s.floor));
        let n = s.credits.min(waiting).min(cap_room).min(window_room);
        if n > 0 {
            s.credits -= n;
            let bucket = now / CALL_BUCKET_MS;
            match s.batches.back_mut() {
                Some(b) if b.bucket == bucket => b.end += n,
                _ => s.batches.push_back(Batch {
                    end: s.called_through + n,
                    bucket,
                    claimed: 0,
                    first_claim_at: None,
                }),
            }
            s.called_through += n;
            s.pending_unclaimed += n;
            s.claimed.extend_to(s.called_through);
        }
        if s.called_through == issued {
            // Nobody left to call: idle credits do not pile up beyond the burst.
            s.credits = s.credits.min(burst);
        }
    }
}

fn active_bucket_ms(session_ms: u64) -> u64 {
    session_ms.div_ceil(512).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::minimal;

    const START: u64 = 1_795_770_000_000;
    const PRE: u64 = START - 15 * 60_000;

    fn config(edit: impl Fn(String) -> String) -> RoomConfig {
        RoomConfig::from_toml("t.toml", &edit(minimal())).unwrap()
    }

    fn room() -> Room {
        Room::new(&config(|s| s), 7, PRE - 1000)
    }

    #[test]
    fn schedule_phases() {
        let mut r = room();
        assert_eq!(r.phase(), Phase::NotOpen);
        assert_eq!(r.join(PRE - 1), Err(JoinError::NotOpen { opens_at: PRE }));
        let t = r.join(PRE).unwrap();
        assert_eq!(t.seq, 1);
        assert_eq!(
            r.poll(&t, PRE + 5).unwrap(),
            PollOutcome::PreQueue {
                sale_starts_at: START,
                queued: 1
            }
        );
        // Nothing is admitted before the sale starts, however long the pre-queue waited.
        assert!(matches!(
            r.poll(&t, START).unwrap(),
            PollOutcome::Waiting { position: 1, .. }
        ));
        // 600/min = one every 100 ms.
        assert!(matches!(
            r.poll(&t, START + 100).unwrap(),
            PollOutcome::Admitted { session_expires_at } if session_expires_at == START + 100 + 600_000
        ));
        let end = START + 3_600_000;
        assert_eq!(r.poll(&t, end).unwrap(), PollOutcome::Closed);
        assert_eq!(r.join(end), Err(JoinError::Closed));
        assert!(matches!(r.log()[0], LogEntry::PreQueueOpened { at: PRE }));
        assert!(matches!(
            r.log()[1],
            LogEntry::SaleStarted {
                seed: 7,
                pre_queue_len: 1,
                shuffled: false,
                ..
            }
        ));
        assert!(matches!(r.log()[2], LogEntry::SaleEnded { .. }));
    }

    #[test]
    fn rejects_foreign_unknown_and_stale_tickets() {
        let mut r = room();
        let t = r.join(START).unwrap();
        let mut other = t.clone();
        other.room = "other".into();
        assert_eq!(
            r.poll(&other, START),
            Err(PollError::WrongRoom("other".into()))
        );
        let mut unknown = t.clone();
        unknown.seq = 2;
        assert_eq!(r.poll(&unknown, START), Err(PollError::UnknownTicket(2)));
        unknown.seq = 0;
        assert_eq!(r.poll(&unknown, START), Err(PollError::UnknownTicket(0)));
        let mut stale = t;
        stale.issued_at = PRE - 2000;
        assert_eq!(r.poll(&stale, START), Err(PollError::StaleTicket));
    }

    #[test]
    fn admits_in_order_at_the_rate() {
        let mut r = room();
        let tickets: Vec<_> = (0..100).map(|_| r.join(START).unwrap()).collect();
        // After 1 s at 600/min, exactly 10 are called.
        let now = START + 1000;
        for (i, t) in tickets.iter().enumerate() {
            let out = r.poll(t, now).unwrap();
            if i < 10 {
                assert!(matches!(out, PollOutcome::Admitted { .. }), "{i}: {out:?}");
            } else {
                assert!(
                    matches!(out, PollOutcome::Waiting { position, .. } if position == i as u64 - 9),
                    "{i}: {out:?}"
                );
            }
        }
        let st = r.stats(now);
        assert_eq!((st.admitted, st.active, st.pending), (10, 10, 0));
        // Polling again inside the turn window re-admits without a second admission, and
        // never extends the session.
        let again = r.poll(&tickets[0], now + 500).unwrap();
        assert_eq!(
            again,
            PollOutcome::Admitted {
                session_expires_at: now + 600_000
            }
        );
        assert_eq!(r.stats(now + 500).admitted, 10);
        assert_eq!(r.stats(now + 500).reclaims, 1);
    }

    #[test]
    fn abandoned_turns_pass_and_their_credit_is_reused() {
        let mut r = room();
        let tickets: Vec<_> = (0..1000).map(|_| r.join(START).unwrap()).collect();
        // Somebody polls every 500 ms (as a crowd does); nobody claims.
        let mut now = START;
        while now < START + 17_000 {
            r.tick(now);
            now += 500;
        }
        // Turns called at 0.5 s and 1.0 s/1.5 s: deadlines at 1 s + 15 s and 2 s + 15 s.
        let st = r.stats(START + 16_999);
        assert_eq!((st.forfeited, st.called_through), (5, 169 + 5));
        let st = r.stats(START + 17_000);
        assert_eq!((st.forfeited, st.called_through), (15, 170 + 15));
        assert_eq!(st.pending, 170);
        assert_eq!(r.poll(&tickets[0], now).unwrap(), PollOutcome::Expired);
        // The line moved past them: rank 185 is admitted.
        assert!(matches!(
            r.poll(&tickets[184], now).unwrap(),
            PollOutcome::Admitted { .. }
        ));
        assert!(matches!(
            r.poll(&tickets[185], now).unwrap(),
            PollOutcome::Waiting { position: 1, .. }
        ));
    }

    #[test]
    fn active_cap_holds_and_frees_on_expiry() {
        let c = config(|s| {
            s.replace("max-active = 1000", "max-active = 5")
                .replace("admitted-per-minute = 600", "admitted-per-minute = 6000")
        });
        let mut r = Room::new(&c, 1, START);
        let tickets: Vec<_> = (0..20).map(|_| r.join(START).unwrap()).collect();
        let mut admitted = 0;
        for t in &tickets {
            if let PollOutcome::Admitted { .. } = r.poll(t, START + 10_000).unwrap() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(r.stats(START + 10_000).active, 5);
        // Sessions end at START+10s+600s; counted to the end of their 1.2 s bucket.
        let later = START + 10_000 + 600_000 + 1200;
        assert_eq!(r.stats(later).active, 0);
        let out = r.poll(&tickets[5], later).unwrap();
        assert!(matches!(out, PollOutcome::Admitted { .. }), "{out:?}");
    }

    #[test]
    fn pre_queue_shuffle_is_a_recorded_permutation() {
        let c = config(|s| s.replace("queueing = \"fifo\"", "queueing = \"pre-queue-shuffle\""));
        let mut r = Room::new(&c, 99, PRE);
        for _ in 0..50 {
            r.join(PRE + 1).unwrap();
        }
        r.tick(START);
        let late = r.join(START + 1).unwrap();
        assert_eq!(r.rank_of(late.seq), 51);
        let ranks: Vec<u64> = (1..=50).map(|s| r.rank_of(s)).collect();
        let mut sorted = ranks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=50).collect::<Vec<_>>());
        assert_ne!(ranks, sorted);
        for s in 1..=51 {
            assert_eq!(r.seq_at(r.rank_of(s)), s);
        }
        let Some(LogEntry::SaleStarted {
            seed,
            pre_queue_len,
            shuffled: true,
            ..
        }) = r.log().get(1).cloned()
        else {
            panic!("{:?}", r.log())
        };
        let replay = Shuffle::new(seed, pre_queue_len);
        for s in 1..=50 {
            assert_eq!(replay.apply(s - 1).unwrap() + 1, r.rank_of(s));
        }
    }

    #[test]
    fn state_round_trips_and_resumes() {
        let mut r = room();
        let tickets: Vec<_> = (0..30).map(|_| r.join(START).unwrap()).collect();
        r.poll(&tickets[0], START + 1000).unwrap();
        let json = serde_json::to_string(r.state()).unwrap();
        let state: RoomState = serde_json::from_str(&json).unwrap();
        assert_eq!(&state, r.state());
        let mut back = Room::restore(r.config(), state).unwrap();
        assert_eq!(
            back.poll(&tickets[1], START + 1500).unwrap(),
            r.poll(&tickets[1], START + 1500).unwrap()
        );
        let again = Room::from_json(r.config(), &r.to_json()).unwrap();
        assert_eq!(again.state(), r.state());
        assert!(matches!(
            Room::from_json(r.config(), "{\"room\": 1}"),
            Err(RestoreError::Corrupt(_))
        ));
        let mut broken = r.state().clone();
        broken.next_seq = 0;
        assert!(matches!(
            Room::restore(r.config(), broken),
            Err(RestoreError::Corrupt(_))
        ));
        let other = config(|s| s.replace("\"test-room\"", "\"other\""));
        assert!(Room::restore(&other, r.state().clone()).is_err());
    }

    #[test]
    fn time_going_back_is_clamped() {
        let mut r = room();
        let t = r.join(START + 5000).unwrap();
        let before = r.stats(START + 5000);
        let out = r.poll(&t, START).unwrap();
        assert!(matches!(out, PollOutcome::Admitted { .. }));
        assert_eq!(r.stats(START).called_through, before.called_through);
    }

    #[test]
    fn closed_loop_decreases_and_recovers_within_bounds() {
        let cl = "[closed-loop]\nmin-admitted-per-minute = 100\nmax-admitted-per-minute = 1000\n\
                  target-p99-latency-ms = 500\nmax-error-rate = 0.05\nincrease-per-minute = 120\n";
        let c = config(|s| s + cl);
        let mut r = Room::new(&c, 1, START);
        let bad = OriginHealth {
            p99_latency_ms: 2000,
            error_rate_5xx: 0.0,
            shed_count: 0,
        };
        let good = OriginHealth {
            p99_latency_ms: 100,
            error_rate_5xx: 0.0,
            shed_count: 0,
        };
        assert_eq!(r.observe_origin(bad, START), 420);
        // Cooldown: a second bad report within 10 s does not cut again.
        assert_eq!(r.observe_origin(bad, START + 5000), 420);
        assert_eq!(r.observe_origin(bad, START + 10_000), 294);
        for k in 1..=20 {
            r.observe_origin(bad, START + 10_000 + k * 10_000);
        }
        assert_eq!(r.stats(START + 300_000).rate_per_minute, 100);
        // Recovery: +120/min of good reports, capped at the max.
        let mut t = START + 300_000;
        for _ in 0..6 {
            t += 10_000;
            r.observe_origin(good, t);
        }
        assert_eq!(r.stats(t).rate_per_minute, 100 + 30 + 100);
        for _ in 0..600 {
            t += 10_000;
            r.observe_origin(good, t);
        }
        assert_eq!(r.stats(t).rate_per_minute, 1000);
        let nan = OriginHealth {
            error_rate_5xx: f64::NAN,
            ..good
        };
        assert_eq!(r.observe_origin(nan, t + 1), 700);
        let shed = OriginHealth {
            shed_count: 1,
            ..good
        };
        assert_eq!(r.observe_origin(shed, t + 20_000), 490);
        assert!(
            r.log()
                .iter()
                .filter(|e| matches!(e, LogEntry::RateChanged { .. }))
                .count()
                <= MAX_LOGGED_RATE_CHANGES
        );
    }

    #[test]
    fn without_closed_loop_the_rate_is_fixed() {
        let mut r = room();
        let bad = OriginHealth {
            p99_latency_ms: u32::MAX,
            error_rate_5xx: 1.0,
            shed_count: u64::MAX,
        };
        assert_eq!(r.observe_origin(bad, START), 600);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join,
        Poll(usize),
        Advance(u64),
        Observe(u32),
        SaveRestore,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Op::Join),
            5 => any::<usize>().prop_map(Op::Poll),
            3 => (0u64..20_000).prop_map(Op::Advance),
            1 => (0u32..2000).prop_map(Op::Observe),
            1 => Just(Op::SaveRestore),
        ]
    }

    proptest::proptest! {
        #[test]
        fn invariants_hold_under_any_sequence(
            ops in proptest::collection::vec(op(), 1..300),
            shuffle: bool,
            seed: u64,
        ) {
            let cl = "[closed-loop]\nmin-admitted-per-minute = 60\nmax-admitted-per-minute = 1200\n\
                      target-p99-latency-ms = 1000\nmax-error-rate = 0.05\n";
            let c = config(|s| {
                let s = s.replace("max-active = 1000", "max-active = 7") + cl;
                if shuffle { s.replace("\"fifo\"", "\"pre-queue-shuffle\"") } else { s }
            });
            let mut r = Room::new(&c, seed, PRE - 1000);
            let mut now = START - 30_000;
            let mut tickets: Vec<Ticket> = Vec::new();
            let mut last_position: Vec<Option<u64>> = Vec::new();
            let mut ever_admitted: Vec<bool> = Vec::new();
            for op in ops {
                match op {
                    Op::Join => {
                        if let Ok(t) = r.join(now) {
                            tickets.push(t);
                            last_position.push(None);
                            ever_admitted.push(false);
                        }
                    }
                    Op::Poll(i) if !tickets.is_empty() => {
                        let i = i % tickets.len();
                        let out = r.poll(&tickets[i], now).unwrap();
                        match out {
                            PollOutcome::Waiting { position, progress_permille, .. } => {
                                proptest::prop_assert!(!ever_admitted[i]);
                                proptest::prop_assert!(progress_permille <= 1000);
                                if let Some(p) = last_position[i] {
                                    proptest::prop_assert!(position <= p, "position went up");
                                }
                                last_position[i] = Some(position);
                            }
                            PollOutcome::Admitted { session_expires_at } => {
                                proptest::prop_assert!(session_expires_at > now);
                                proptest::prop_assert!(session_expires_at <= now + c.session_ms);
                                ever_admitted[i] = true;
                            }
                            _ => {}
                        }
                    }
                    Op::Poll(_) => {}
                    Op::Advance(dt) => now += dt,
                    Op::Observe(p99) => {
                        let h = OriginHealth { p99_latency_ms: p99, error_rate_5xx: 0.0, shed_count: 0 };
                        let rate = r.observe_origin(h, now);
                        proptest::prop_assert!((60..=1200).contains(&rate));
                    }
                    Op::SaveRestore => {
                        let json = serde_json::to_string(r.state()).unwrap();
                        let back: RoomState = serde_json::from_str(&json).unwrap();
                        r = Room::restore(&c, back).unwrap();
                    }
                }
                let st = r.stats(now);
                proptest::prop_assert!(st.active + st.pending <= c.max_active);
                proptest::prop_assert!(st.called_through <= st.issued);
                proptest::prop_assert_eq!(st.admitted + st.forfeited + st.pending, st.called_through);
                let elapsed = now.saturating_sub(START);
                proptest::prop_assert!(st.admitted <= 1200 * elapsed / 60_000, "{:?}", st);
            }
        }
    }
}
