//! The room under a flash crowd, on a virtual clock, through the same `Room` API the Durable
//! Object calls.
//!
//! Run with the figures printed: `cargo test -p waiting-room --release --test simulation -- --nocapture`
//!
//! Model: every shopper joins in one burst, then polls every `poll-interval` at its own phase
//! (a 50 ms grid). Some shoppers abandon at a random moment and never poll again. The polls of
//! shoppers who are still waiting do not change the room (a poll of an uncalled ticket only
//! advances the clock and reads the cursor), so they are simulated in aggregate by one
//! `Room::tick(now)` per 50 ms step plus one sampled `poll` of the next ticket in line; every
//! poll that can change the room (a called ticket claiming its turn) is a real `Room::poll`.

use std::collections::VecDeque;

use waiting_room::{LogEntry, OriginHealth, PollOutcome, Room, RoomConfig, Shuffle, Ticket};

const STEP_MS: u64 = 50;
const START: u64 = 1_795_770_000_000; // 2026-11-27T09:00:00Z

fn config(rate: u32, max_active: u64, queueing: &str, closed_loop: &str) -> RoomConfig {
    let text = format!(
        r#"
id = "sim"
failure-mode = "closed"
[paths]
prefix = ["/sale/"]
[admission]
admitted-per-minute = {rate}
max-active = {max_active}
session-duration-secs = 600
poll-interval-secs = 5
abandon-timeout-secs = 15
queueing = "{queueing}"
[schedule]
pre-queue-opens = "2026-11-27T08:45:00Z"
sale-starts = "2026-11-27T09:00:00Z"
sale-ends = "2026-11-27T12:00:00Z"
{closed_loop}
"#
    );
    RoomConfig::from_toml("sim.toml", &text).expect("valid sim config")
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A `[closed-loop]` config section and the origin's capacity by minute.
type ClosedLoopSim = (&'static str, fn(u64) -> u64);

struct Sim {
    n: usize,
    /// Share of shoppers who abandon, in percent.
    abandon_pct: u64,
    /// Shoppers abandon uniformly within this long after the start.
    abandon_within_ms: u64,
    pre_queue: bool,
    rate: u32,
    max_active: u64,
    queueing: &'static str,
    seed: u64,
    /// With a closed loop: its config section, and the origin's capacity (admissions per
    /// minute it takes) by minute of the sale. Every 10 s the origin reports its health: p99
    /// of 2 s when the last 10 s of admissions exceed its capacity, 150 ms otherwise.
    closed_loop: Option<ClosedLoopSim>,
}

#[derive(Debug)]
struct Report {
    per_minute: Vec<u64>,
    /// Minute in which the last ticket was called.
    drain_minute: usize,
    max_active_seen: u64,
    max_active_room: u64,
    admitted: u64,
    persistent: u64,
    persistent_expired: u64,
    ordering_violations: u64,
    waiting_answers_wrong: u64,
    forfeited: u64,
    pending_at_end: u64,
    abandoned_after_call: u64,
    finished_at_ms: u64,
    rank_of_seq: Vec<u32>,
    log: Vec<LogEntry>,
    /// Admission rate in force at the end of each minute.
    rate_by_minute: Vec<u32>,
}

impl Sim {
    fn run(&self) -> Report {
        let cfg = config(
            self.rate,
            self.max_active,
            self.queueing,
            self.closed_loop.map_or("", |c| c.0),
        );
        let poll_ms = cfg.poll_interval_ms;
        let slots = (poll_ms / STEP_MS) as usize;
        let n = self.n;
        let salt = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let slot_of = |i: usize| (mix(i as u64 ^ salt) % slots as u64) as usize;
        // u64::MAX: never abandons.
        let abandons_at: Vec<u64> = (0..n)
            .map(|i| {
                let h = mix(i as u64 ^ salt ^ 0xabad_1dea);
                if h % 100 < self.abandon_pct {
                    START + (h >> 8) % self.abandon_within_ms
                } else {
                    u64::MAX
                }
            })
            .collect();

        let created = cfg.pre_queue_opens_ms;
        let mut room = Room::new(&cfg, self.seed, created);
        let mut tickets: Vec<Ticket> = Vec::with_capacity(n);
        let join_start = if self.pre_queue {
            START - 60_000
        } else {
            START
        };
        // The burst: everyone joins within one second.
        for i in 0..n {
            let at = join_start + (i as u64 * 1000) / n as u64;
            tickets.push(room.join(at).expect("join"));
        }
        assert!(tickets
            .iter()
            .enumerate()
            .all(|(i, t)| t.seq == i as u64 + 1));

        // The sale starts (drawing the pre-queue order); rank -> seq for the checks below.
        room.tick(START);
        let rank_of_seq: Vec<u32> = (1..=n as u64).map(|s| room.rank_of(s) as u32).collect();
        let mut seq_at_rank = vec![0u32; n + 1];
        for (i, &r) in rank_of_seq.iter().enumerate() {
            seq_at_rank[r as usize] = i as u32 + 1;
        }

        let mut wheel: Vec<Vec<u32>> = vec![Vec::new(); slots];
        let mut admitted_at = vec![u64::MAX; n];
        let mut per_minute: Vec<u64> = Vec::new();
        let mut expiries: VecDeque<u64> = VecDeque::new();
        let mut max_active_seen = 0u64;
        let mut max_active_room = 0u64;
        let mut last_called = 0u64;
        let mut drain_minute = usize::MAX;
        let mut persistent_expired = 0u64;
        let mut waiting_answers_wrong = 0u64;
        let mut abandoned_after_call = 0u64;
        let mut admitted = 0u64;
        let persistent = abandons_at.iter().filter(|&&a| a == u64::MAX).count() as u64;
        let mut persistent_admitted = 0u64;
        let mut rate_by_minute: Vec<u32> = Vec::new();
        let mut admitted_last_10s = 0u64;

        let mut k: u64 = (join_start.max(START) + 1000 - START) / STEP_MS;
        let mut now = START + k * STEP_MS;
        while persistent_admitted < persistent {
            assert!(now < START + 3 * 3_600_000, "simulation did not finish");
            room.tick(now);
            if let Some((_, capacity)) = self.closed_loop {
                if (now - START).is_multiple_of(10_000) {
                    let minute = (now - START) / 60_000;
                    let hurting = admitted_last_10s * 6 > capacity(minute);
                    let health = OriginHealth {
                        p99_latency_ms: if hurting { 2000 } else { 150 },
                        error_rate_5xx: 0.0,
                        shed_count: 0,
                    };
                    room.observe_origin(health, now);
                    admitted_last_10s = 0;
                }
            }
            let stats = room.stats(now);
            if (now - START) % 60_000 == 60_000 - STEP_MS {
                rate_by_minute.push(stats.rate_per_minute);
            }
            max_active_room = max_active_room.max(stats.active + stats.pending);
            // Newly called ranks: their holders (if still around) claim at their next poll.
            for rank in last_called + 1..=stats.called_through {
                let seq = seq_at_rank[rank as usize] as usize;
                let i = seq - 1;
                if abandons_at[i] <= now {
                    abandoned_after_call += 1; // gone before its turn: the turn will pass
                    continue;
                }
                wheel[slot_of(i)].push(i as u32);
            }
            last_called = stats.called_through;
            if last_called == n as u64 && drain_minute == usize::MAX {
                drain_minute = ((now - START) / 60_000) as usize;
            }
            // The next one in line, polling: must hear "position 1".
            if last_called < n as u64 {
                let i = seq_at_rank[last_called as usize + 1] as usize - 1;
                match room.poll(&tickets[i], now) {
                    Ok(PollOutcome::Waiting { position: 1, .. }) => {}
                    _ => waiting_answers_wrong += 1,
                }
            }
            let slot = (k % slots as u64) as usize;
            let due = std::mem::take(&mut wheel[slot]);
            for i in due {
                let i = i as usize;
                if abandons_at[i] <= now {
                    abandoned_after_call += 1;
                    continue;
                }
                match room.poll(&tickets[i], now).expect("poll") {
                    PollOutcome::Admitted { session_expires_at } => {
                        admitted_at[i] = now;
                        admitted += 1;
                        admitted_last_10s += 1;
                        if abandons_at[i] == u64::MAX {
                            persistent_admitted += 1;
                        }
                        let minute = ((now - START) / 60_000) as usize;
                        if per_minute.len() <= minute {
                            per_minute.resize(minute + 1, 0);
                        }
                        per_minute[minute] += 1;
                        expiries.push_back(session_expires_at);
                    }
                    PollOutcome::Expired if abandons_at[i] == u64::MAX => persistent_expired += 1,
                    other => panic!("called ticket {} answered {other:?}", i + 1),
                }
            }
            while expiries.front().is_some_and(|&e| e <= now) {
                expiries.pop_front();
            }
            max_active_seen = max_active_seen.max(expiries.len() as u64);
            k += 1;
            now += STEP_MS;
        }
        let stats = room.stats(now);

        let ordering_violations = count_ordering_violations(
            &seq_at_rank,
            &admitted_at,
            |i| slot_of(i) as u64 * STEP_MS,
            poll_ms,
        );

        Report {
            per_minute,
            drain_minute,
            max_active_seen,
            max_active_room,
            admitted,
            persistent,
            persistent_expired,
            ordering_violations,
            waiting_answers_wrong,
            forfeited: stats.forfeited,
            pending_at_end: stats.pending,
            abandoned_after_call,
            finished_at_ms: now - START,
            rank_of_seq,
            log: room.log().to_vec(),
            rate_by_minute,
        }
    }
}

/// Order check: for each admitted shopper (index `i`, rank order given by `seq_at_rank`, 1-based
/// with a dummy at 0), it was admitted no later than its first poll at or after the earliest
/// admission of anyone behind it in line (by then its turn had been called, since turns are
/// called in order). `phase(i)` is shopper i's poll offset from START.
fn count_ordering_violations(
    seq_at_rank: &[u32],
    admitted_at: &[u64],
    phase: impl Fn(usize) -> u64,
    poll_ms: u64,
) -> u64 {
    let mut violations = 0;
    // Earliest admission among shoppers behind the current one.
    let mut later_min: Option<u64> = None;
    for rank in (1..seq_at_rank.len()).rev() {
        let i = seq_at_rank[rank] as usize - 1;
        let t = admitted_at[i];
        if t == u64::MAX {
            continue;
        }
        if let Some(m) = later_min {
            let offset = (phase(i) + poll_ms - (m - START) % poll_ms) % poll_ms;
            if t > m + offset {
                violations += 1;
            }
        }
        later_min = Some(later_min.map_or(t, |m| m.min(t)));
    }
    violations
}

#[test]
fn ordering_check_catches_a_later_ticket_admitted_first() {
    // Three shoppers in rank order, all polling at offset 0 every 5 s.
    let seq_at_rank = [0, 1, 2, 3];
    let ok = [START, START + 5_000, START + 5_000];
    assert_eq!(
        count_ordering_violations(&seq_at_rank, &ok, |_| 0, 5_000),
        0
    );
    // Rank 3 admitted at 0 s; rank 1 only at 10 s although it polled at 5 s: a violation.
    let bad = [START + 10_000, START + 10_000, START];
    assert_eq!(
        count_ordering_violations(&seq_at_rank, &bad, |_| 0, 5_000),
        2
    );
    // Rank 1 polls at offset 2 s: admitted at its first poll after rank 2, fine.
    let fine = [START + 2_000, START, u64::MAX];
    assert_eq!(
        count_ordering_violations(
            &seq_at_rank,
            &fine,
            |i| if i == 0 { 2_000 } else { 0 },
            5_000
        ),
        0
    );
}

fn check_rate(r: &Report, rate: u64) {
    // Every full minute while the line is long (after the first, where the first turn windows
    // of abandoned tickets are still open, and before the minute the last ticket is called).
    let steady = &r.per_minute[1..r.drain_minute.min(r.per_minute.len())];
    assert!(
        steady.len() >= 5,
        "too few steady minutes: {:?}",
        r.per_minute
    );
    for (m, &count) in steady.iter().enumerate() {
        let dev = (count as f64 - rate as f64) / rate as f64;
        assert!(
            dev.abs() <= 0.01,
            "minute {}: {count} admissions vs {rate} configured ({:+.2} %)",
            m + 2,
            dev * 100.0
        );
    }
    // Never more than the rate allows, cumulatively, from the start.
    let mut total = 0;
    for (m, &count) in r.per_minute.iter().enumerate() {
        total += count;
        assert!(
            total <= rate * (m as u64 + 1),
            "minute {}: {total} > rate",
            m + 1
        );
    }
    // Abandonment delays the first minute by at most the share that abandoned times the turn
    // window (15 s + 1 s batch + 5 s poll) out of 60 s.
    assert!(r.per_minute[0] as f64 >= rate as f64 * (1.0 - 0.2 * 21.0 / 60.0) - 1.0);
}

fn summary(name: &str, r: &Report, rate: u64) {
    let steady = &r.per_minute[1..r.drain_minute.min(r.per_minute.len())];
    let (lo, hi) = (
        steady.iter().min().copied().unwrap_or(0),
        steady.iter().max().copied().unwrap_or(0),
    );
    println!(
        "{name}: admitted {} of {} shoppers ({} kept polling) in {:.1} virtual min; \
         per minute: first {} , steady min {lo} / max {hi} vs {rate} configured \
         ({:+.3} % / {:+.3} %), minutes {:?}; max active {} (room's conservative count incl. \
         pending turns {}); ordering violations {}; persistent shoppers expired {}; \
         forfeited turns {} (abandoned before their call {}); wrong waiting answers {}",
        r.admitted,
        r.rank_of_seq.len(),
        r.persistent,
        r.finished_at_ms as f64 / 60_000.0,
        r.per_minute[0],
        (lo as f64 - rate as f64) / rate as f64 * 100.0,
        (hi as f64 - rate as f64) / rate as f64 * 100.0,
        r.per_minute,
        r.max_active_seen,
        r.max_active_room,
        r.ordering_violations,
        r.persistent_expired,
        r.forfeited,
        r.abandoned_after_call,
        r.waiting_answers_wrong,
    );
}

fn common_checks(r: &Report, max_active: u64) {
    assert_eq!(r.ordering_violations, 0);
    assert_eq!(
        r.persistent_expired, 0,
        "a shopper who kept polling lost the turn"
    );
    assert_eq!(r.waiting_answers_wrong, 0);
    assert!(r.max_active_seen <= max_active);
    assert!(r.max_active_room <= max_active);
    // Abandoned tickets stopped blocking the line: only turns whose holder had left went
    // unclaimed, and all of them passed except those whose turn window is still open.
    assert!(r.forfeited <= r.abandoned_after_call);
    assert!(r.abandoned_after_call - r.forfeited <= r.pending_at_end);
}

#[test]
fn one_million_shoppers_fifo_with_abandonment() {
    let rate = 30_000;
    let max_active = 400_000;
    let sim = Sim {
        n: 1_000_000,
        abandon_pct: 20,
        abandon_within_ms: 30 * 60_000,
        pre_queue: false,
        rate,
        max_active,
        queueing: "fifo",
        seed: 1,
        closed_loop: None,
    };
    let r = sim.run();
    summary("fifo", &r, u64::from(rate));
    common_checks(&r, max_active);
    check_rate(&r, u64::from(rate));
    // The line keeps moving: all who kept polling were in within the time the rate needs for
    // the admitted ones, plus the first turn windows.
    let needed_ms = r.admitted * 60_000 / u64::from(rate);
    assert!(
        r.finished_at_ms <= needed_ms + 60_000,
        "{} ms",
        r.finished_at_ms
    );
}

#[test]
fn one_million_pre_queued_shoppers_shuffled_from_the_recorded_seed() {
    let rate = 30_000;
    let max_active = 400_000;
    let sim = Sim {
        n: 1_000_000,
        abandon_pct: 20,
        abandon_within_ms: 30 * 60_000,
        pre_queue: true,
        rate,
        max_active,
        queueing: "pre-queue-shuffle",
        seed: 0x5eed_2026,
        closed_loop: None,
    };
    let r = sim.run();
    summary("pre-queue shuffle", &r, u64::from(rate));
    common_checks(&r, max_active);
    check_rate(&r, u64::from(rate));

    // The order is a permutation of 1..=n ...
    let n = r.rank_of_seq.len();
    let mut seen = vec![false; n + 1];
    for &rank in &r.rank_of_seq {
        assert!(rank >= 1 && rank as usize <= n && !seen[rank as usize]);
        seen[rank as usize] = true;
    }
    // ... not the arrival order ...
    let in_place = r
        .rank_of_seq
        .iter()
        .enumerate()
        .filter(|&(i, &rank)| rank as usize == i + 1)
        .count();
    assert!(
        in_place < 100,
        "{in_place} shoppers kept their arrival place"
    );
    // ... reproducible by anyone from the seed in the room's log.
    let (seed, len) = r
        .log
        .iter()
        .find_map(|e| match e {
            LogEntry::SaleStarted {
                seed,
                pre_queue_len,
                shuffled: true,
                ..
            } => Some((*seed, *pre_queue_len)),
            _ => None,
        })
        .expect("sale start with seed in the log");
    assert_eq!(len, n as u64);
    let replay = Shuffle::new(seed, len);
    for (i, &rank) in r.rank_of_seq.iter().enumerate() {
        assert_eq!(replay.apply(i as u64).map(|x| x + 1), Some(u64::from(rank)));
    }
}

#[test]
fn active_cap_is_never_exceeded_when_it_binds() {
    // 6000/min for 10-minute sessions would need 60 000 live sessions; the cap is 20 000, so
    // after ~3 minutes admissions are paced by sessions ending.
    let rate = 6_000;
    let max_active = 20_000;
    let sim = Sim {
        n: 60_000,
        abandon_pct: 20,
        abandon_within_ms: 20 * 60_000,
        pre_queue: false,
        rate,
        max_active,
        queueing: "fifo",
        seed: 3,
        closed_loop: None,
    };
    let r = sim.run();
    summary("cap-bound", &r, u64::from(rate));
    common_checks(&r, max_active);
    assert!(
        r.max_active_seen >= max_active * 95 / 100,
        "cap never approached: {}",
        r.max_active_seen
    );
}

#[test]
fn closed_loop_follows_the_origin_down_and_back_up() {
    // The origin takes 33 000 admissions a minute, only 12 000 from minute 4 to minute 9 (a
    // backend degrades), then 33 000 again.
    fn capacity(minute: u64) -> u64 {
        if (4..9).contains(&minute) {
            12_000
        } else {
            33_000
        }
    }
    let cl = "[closed-loop]\nmin-admitted-per-minute = 3000\nmax-admitted-per-minute = 30000\n\
              target-p99-latency-ms = 1000\nmax-error-rate = 0.05\nincrease-per-minute = 6000\n\
              decrease-factor = 0.7\ndecrease-cooldown-secs = 10\n";
    let sim = Sim {
        n: 400_000,
        abandon_pct: 10,
        abandon_within_ms: 20 * 60_000,
        pre_queue: false,
        rate: 30_000,
        max_active: 1_000_000,
        queueing: "fifo",
        seed: 4,
        closed_loop: Some((cl, capacity)),
    };
    let r = sim.run();
    println!(
        "closed loop: rate at the end of each minute {:?}; admissions per minute {:?}",
        r.rate_by_minute, r.per_minute
    );
    common_checks(&r, 1_000_000);
    assert!(r
        .rate_by_minute
        .iter()
        .all(|&x| (3000..=30_000).contains(&x)));
    // Healthy at first: full rate.
    assert_eq!(r.rate_by_minute[2], 30_000);
    // Hurting: within a minute the rate is at or below the origin's capacity, and admissions
    // stay near it (AIMD saws between 0.7x and 1x of the capacity).
    for m in 5..9 {
        assert!(
            r.rate_by_minute[m] <= 12_000 * 11 / 10,
            "minute {m}: {:?}",
            r.rate_by_minute
        );
        assert!(
            (6_000..=13_000).contains(&r.per_minute[m]),
            "minute {m}: {:?}",
            r.per_minute
        );
    }
    // Recovered: back to the full rate within a few minutes of additive increase.
    assert_eq!(r.rate_by_minute[13], 30_000, "{:?}", r.rate_by_minute);
}
