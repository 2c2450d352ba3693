//! Flash-sale waiting room: the logic one Durable Object per room runs, kept pure so that a
//! native simulation exercises exactly what runs at the edge.
//!
//! Nothing here reads a clock, draws randomness or touches storage: every call takes `now` in
//! Unix milliseconds, the shuffle seed and signing keys are passed in, and the room's state is
//! a serde value the host persists ([`Room::state`] / [`Room::restore`]).
//!
//! # Pieces
//!
//! - [`RoomConfig`]: the room file (TOML) validated, with errors naming file, line, column and
//!   key; also the guarded-path and bypass checks the edge runs per request.
//! - [`Room`]: tickets, admission, active sessions, the closed loop.
//! - [`token`]: signed ticket cookies and admission tokens (HMAC-SHA256 via `ring`, two keys
//!   valid at once), used by both the edge worker (wasm32) and the origin proxy (native).
//! - [`page`]: the waiting page (HTML with JavaScript polling and a meta-refresh fallback) and
//!   its JSON twin.
//!
//! # The flow at the edge and at the origin
//!
//! ```
//! use waiting_room::token::{self, Keys};
//! use waiting_room::page::{render_waiting_page, WaitingStatus};
//! use waiting_room::{PollOutcome, Room, RoomConfig, RoomState};
//!
//! let config = RoomConfig::from_toml(
//!     "flash-sale.toml",
//!     include_str!("../examples/flash-sale.toml"),
//! )?;
//! let keys = Keys::new(("2026-11", &[7u8; 32]), None)?;
//! let start = config.sale_starts_ms;
//!
//! // In the Durable Object: one Room, persisted as JSON after every call.
//! let mut room = Room::new(&config, /* seed from crypto.getRandomValues */ 0x5eed, start - 60_000);
//!
//! // A shopper without a ticket: join, and set the ticket cookie.
//! let ticket = room.join(start - 30_000)?;
//! let cookie = keys.sign_ticket(&ticket, config.ticket_expires_at());
//! let set_cookie = token::set_cookie(token::TICKET_COOKIE, &cookie, 3600);
//!
//! // Later polls carry the cookie: verify it, then ask the room.
//! let ticket = keys.verify_ticket(&cookie, &config.id, start + 1_000)?;
//! match room.poll(&ticket, start + 1_000)? {
//!     PollOutcome::Admitted { session_expires_at } => {
//!         let admission = keys.sign_admission(&config.id, ticket.seq, session_expires_at);
//!         // Set it as a cookie; the origin proxy checks it on every guarded request:
//!         assert!(keys.verify_admission(&admission, &config.id, start + 2_000).is_ok());
//!     }
//!     other => {
//!         let status = WaitingStatus::new(&config, &other);
//!         let _json = status.to_json(); // for Accept: application/json
//!         let _html = render_waiting_page(&config, &status);
//!     }
//! }
//!
//! // Persist and restore.
//! let saved = serde_json::to_string(room.state())?;
//! let room = Room::restore(&config, serde_json::from_str::<RoomState>(&saved)?)?;
//! # let _ = (room, set_cookie);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How admission works
//!
//! Shoppers get a **ticket** with a sequence number `seq` in joining order. When the sale
//! starts, each ticket has a **rank** (its place in line): `rank = seq`, except that with
//! `pre-queue-shuffle` the `n` tickets issued before the start get `rank = P(seq - 1) + 1`
//! where `P` = [`Shuffle::new`]`(seed, n)`, a keyed Feistel permutation of `[0, n)` with cycle
//! walking, computed per ticket in O(1) memory. The seed and `n` are written to the room's log
//! ([`LogEntry::SaleStarted`]), so anyone can recompute the order.
//!
//! **Credits** accrue at the admission rate with exact integer arithmetic (a leaky bucket:
//! `rate × elapsed_ms / 60 000`, the remainder carried), from the sale start. Unused credits
//! are capped at a burst of one poll interval's worth (`rate × poll / 60 s + 1`) so a quiet room
//! does not save up a flood.
//!
//! Each credit **calls** the next rank: the cursor `called_through` advances by one. A called
//! rank's holder claims the turn at its next poll, which **admits** it. Calls also need room
//! under the active cap: a called-but-unclaimed turn holds a place, so
//! `active + pending ≤ max-active` always, and hence `active ≤ max-active`.
//!
//! **Turn windows.** Ranks called within the same second form a batch with one deadline: the end
//! of that second plus `abandon-timeout`. A rank may claim from its call until its batch's
//! deadline, so every called shopper gets at least `abandon-timeout` (which the config forces
//! to be ≥ 2 polling intervals). At the deadline the batch is resolved: each unclaimed turn is
//! **forfeited** and its credit goes back into the pool, calling the next rank. Holders of
//! forfeited turns get [`PollOutcome::Expired`]. This is how abandoned tickets stop blocking
//! the line without the room knowing who left: it only learns that a called turn went
//! unclaimed.
//!
//! **Claims** are exact thanks to one bit per rank in the pending window
//! `[floor, called_through]` (the ranks whose batch is not yet resolved): a second poll by an
//! admitted ticket inside its window re-answers `Admitted` with an expiry no later than the
//! first (the batch's first claim + session), and never counts twice.
//!
//! **Active sessions** are counted by expiry bucket (`session / 512`, at least 1 s): an
//! admission at `t` adds one to the bucket of `t + session`, and the bucket is released when
//! it has fully passed, so a session is counted at least as long as its token is valid.
//!
//! # Guarantees
//!
//! - **Rate.** Every admission consumes a credit that accrued at the configured rate, and a
//!   credit is used by at most one admission (forfeited turns return theirs). So admissions
//!   from the sale start to `t` never exceed `∫ rate dt / 60 000`, and while the line is long,
//!   shoppers keep polling and the cap is not binding, each credit becomes an admission within
//!   one polling interval of accruing (or, for a credit that calls an abandoned ticket, within
//!   `abandon-timeout + 1 s` more per abandoned ticket it meets). The simulation test measures
//!   it: admissions per minute within ±1 % of the rate once the first turn windows have
//!   passed.
//! - **Cap.** `active + pending ≤ max-active` at all times.
//! - **Order.** Ranks are called strictly in order. A shopper who polls at least every
//!   `abandon-timeout` never loses a turn, and is admitted at the first poll after its call:
//!   no later rank is called before it, so no later ticket is admitted more than one polling
//!   interval before it.
//! - **Abandonment.** An unclaimed turn blocks nobody for longer than `abandon-timeout + 1 s`.
//! - **State size** is independent of the number of shoppers: a few counters, at most
//!   `abandon-timeout / 1 s + 2` batches, at most 514 active-session buckets and one bit per
//!   pending rank (about `rate × abandon-timeout / 60 s`, bounded by [`room::MAX_PENDING_RANKS`],
//!   32 KiB).
//!
//! # Closed loop
//!
//! [`Room::observe_origin`] takes the origin proxy's health report. The origin is *hurting*
//! when p99 latency exceeds `target-p99-latency-ms`, the 5xx share exceeds `max-error-rate`
//! (a non-finite share counts as hurting) or more than `max-shed-count` requests were shed.
//! Hurting: the rate is multiplied by `decrease-factor` (at most once per
//! `decrease-cooldown-secs`, so a burst of bad reports is one cut). Healthy: the rate grows by
//! `increase-per-minute` per minute elapsed since the previous report (at most 15 s worth
//! per report, so a silence is not a healthy spell). It never leaves `[min-admitted-per-minute, max-admitted-per-minute]`.
//! This is AIMD, as in TCP congestion control: fast back-off, slow probing.
#![warn(missing_docs)]

pub mod config;
pub mod net;
pub mod page;
pub mod room;
pub mod shuffle;
pub mod timestamp;
pub mod token;

pub use config::{ClosedLoop, ConfigError, FailureMode, QueueingMethod, RoomConfig};
pub use room::{
    JoinError, LogEntry, OriginHealth, Phase, PollError, PollOutcome, RestoreError, Room,
    RoomState, RoomStats, Ticket,
};
pub use shuffle::Shuffle;
