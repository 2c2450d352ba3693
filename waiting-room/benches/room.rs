//! Cost of the room's hot paths and of token checks.
//!
//! `cargo bench -p waiting-room --bench room`
//!
//! - `room/join`: issue a ticket in a room with a long line.
//! - `room/poll_waiting/{clock}`: a waiting ticket's poll, with the clock standing still and
//!   moving 1 ms per poll (credit accrual and calls included).
//! - `room/poll_claim`: a called ticket claiming its turn (admission).
//! - `token/*`: sign and verify an admission token (HMAC-SHA256, ring); `verify_ticket`.
//! - `state/*`: the JSON round trip a Durable Object pays to persist the room, beside the
//!   naive alternative of one record per shopper (an array of seqs, 1 000 000 entries).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use waiting_room::token::Keys;
use waiting_room::{PollOutcome, Room, RoomConfig, RoomState, Ticket};

const START: u64 = 1_795_770_000_000;

fn config() -> RoomConfig {
    let text = r#"
id = "bench"
failure-mode = "closed"
[paths]
prefix = ["/sale/"]
[admission]
admitted-per-minute = 30000
max-active = 400000
session-duration-secs = 600
poll-interval-secs = 5
abandon-timeout-secs = 15
queueing = "pre-queue-shuffle"
[schedule]
pre-queue-opens = "2026-11-27T08:45:00Z"
sale-starts = "2026-11-27T09:00:00Z"
sale-ends = "2026-11-27T12:00:00Z"
"#;
    RoomConfig::from_toml("bench.toml", text).expect("valid")
}

/// A room 20 s into a sale with a million shoppers in line (half pre-queued and shuffled).
fn busy_room() -> (Room, Vec<Ticket>) {
    let cfg = config();
    let mut room = Room::new(&cfg, 42, START - 60_000);
    let mut tickets = Vec::with_capacity(1_000_000);
    for i in 0..500_000u64 {
        tickets.push(room.join(START - 60_000 + i / 10).expect("join"));
    }
    for _ in 0..500_000u64 {
        tickets.push(room.join(START).expect("join"));
    }
    let mut now = START;
    while now < START + 20_000 {
        room.tick(now);
        now += 50;
    }
    (room, tickets)
}

fn bench_room(c: &mut Criterion) {
    let (room, tickets) = busy_room();
    let now = START + 20_000;
    let mut g = c.benchmark_group("room");

    g.bench_function("join", |b| {
        let mut r = room.clone();
        b.iter(|| black_box(r.join(black_box(now))))
    });

    let last = tickets.last().expect("tickets").clone();
    g.bench_function(BenchmarkId::new("poll_waiting", "clock-still"), |b| {
        let mut r = room.clone();
        b.iter(|| black_box(r.poll(black_box(&last), now)))
    });
    // A fresh room every 10 000 polls (clone cost amortised), so the virtual clock stays
    // inside the sale.
    g.bench_function(
        BenchmarkId::new("poll_waiting", "clock-1ms-per-poll"),
        |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                let mut left = iters;
                while left > 0 {
                    let mut r = room.clone();
                    for t in 1..=left.min(10_000) {
                        black_box(r.poll(black_box(&last), now + t)).ok();
                    }
                    left -= left.min(10_000);
                }
                start.elapsed()
            })
        },
    );

    // A called, unclaimed ticket: the first rank called in the current batch.
    let mut probe = room.clone();
    let called = probe.stats(now).called_through;
    let seq = probe.seq_at(called);
    let claimer = tickets[(seq - 1) as usize].clone();
    assert!(matches!(
        probe.poll(&claimer, now),
        Ok(PollOutcome::Admitted { .. })
    ));
    g.bench_function("poll_claim", |b| {
        b.iter_batched(
            || room.clone(),
            |mut r| {
                let out = r.poll(&claimer, now);
                (r, out) // dropped outside the measurement
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("state");
    let state = room.state().clone();
    let json = serde_json::to_string(&state).expect("json");
    println!("room state: {} bytes of JSON", json.len());
    g.bench_function("to_json", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&state))))
    });
    g.bench_function("from_json", |b| {
        b.iter(|| black_box(serde_json::from_str::<RoomState>(black_box(&json))))
    });
    let naive: Vec<u64> = (1..=1_000_000).collect();
    let naive_json = serde_json::to_string(&naive).expect("json");
    println!("naive per-shopper list: {} bytes of JSON", naive_json.len());
    g.bench_function("naive_per_shopper_from_json", |b| {
        b.iter(|| black_box(serde_json::from_str::<Vec<u64>>(black_box(&naive_json))))
    });
    g.finish();
}

fn bench_token(c: &mut Criterion) {
    let keys = Keys::new(
        ("k2", b"fedcba9876543210fedcba9876543210"),
        Some(("k1", b"0123456789abcdef0123456789abcdef")),
    )
    .expect("keys");
    let token = keys.sign_admission("bench", 123_456, START + 600_000);
    let ticket = keys.sign_ticket(
        &Ticket {
            room: "bench".into(),
            seq: 123_456,
            issued_at: START,
            cursor_at_join: 0,
        },
        START + 3_600_000,
    );
    let mut g = c.benchmark_group("token");
    g.bench_function("sign_admission", |b| {
        b.iter(|| black_box(keys.sign_admission("bench", black_box(123_456), START + 600_000)))
    });
    g.bench_function("verify_admission", |b| {
        b.iter(|| black_box(keys.verify_admission(black_box(&token), "bench", START)))
    });
    g.bench_function("verify_ticket", |b| {
        b.iter(|| black_box(keys.verify_ticket(black_box(&ticket), "bench", START)))
    });
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    g.bench_function("verify_admission_forged", |b| {
        b.iter(|| black_box(keys.verify_admission(black_box(&forged), "bench", START)))
    });
    g.finish();
}

criterion_group!(benches, bench_room, bench_token);
criterion_main!(benches);
