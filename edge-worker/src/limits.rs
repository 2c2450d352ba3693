//! Global rate limits: a Durable Object (`RateLimits`, binding `LIMITS`) keeps the count of a
//! rule with `scope = "global"` for every edge location and isolate at once.
//!
//! The custom rules first count each request in the isolate's own limiter; a global rule's
//! check then goes to the object named after the rule (one object per rule, so rules do not
//! contend), which runs the same GCRA step (`waf_rules::ratelimit::gcra_step`) on state kept in
//! its storage: one entry per key, two integers. If the object cannot be reached the request is
//! let through (fail open) and the error is logged: a limit must never take the shop down.

// The `durable_object` macro generates undocumented exports for the runtime.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};
use waf_rules::custom::{GlobalLimitCheck, Mode, OnExceed};
use waf_rules::ratelimit::{gcra_step, KeyState, Quota};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
};

/// The check the worker sends to the object.
#[derive(Serialize, Deserialize)]
struct CheckRequest {
    key: String,
    requests: u32,
    period_ms: u64,
    mitigation_ms: u64,
    now_ms: u64,
}

/// The object's answer.
#[derive(Serialize, Deserialize)]
struct CheckAnswer {
    limited: bool,
    retry_after_secs: u64,
}

/// The Durable Object holding the counts of one global rule.
#[durable_object(fetch)]
pub struct RateLimits {
    state: State,
}

impl DurableObject for RateLimits {
    fn new(state: State, _env: Env) -> Self {
        RateLimits { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(check) = req.json::<CheckRequest>().await else {
            return Response::error("expected a JSON limit check", 400);
        };
        if check.key.len() > 512 {
            return Response::error("limit key too long", 400);
        }
        let storage = self.state.storage();
        // Stored as "tat_us:blocked_until_ms" (JS numbers cannot hold every u64).
        let mut state = KeyState::default();
        if let Some(saved) = storage.get::<String>(&check.key).await? {
            if let Some((tat, blocked)) = saved.split_once(':') {
                state.tat_us = tat.parse().unwrap_or(0);
                state.blocked_until_ms = blocked.parse().unwrap_or(0);
            }
        }
        let quota = Quota {
            requests: check.requests.max(1),
            period_ms: check.period_ms.max(1),
            mitigation_ms: check.mitigation_ms,
        };
        let decision = gcra_step(&mut state, &quota, check.now_ms);
        storage
            .put(
                &check.key,
                format!("{}:{}", state.tat_us, state.blocked_until_ms),
            )
            .await?;
        Response::from_json(&CheckAnswer {
            limited: decision.is_limited(),
            retry_after_secs: decision.retry_after_secs(),
        })
    }
}

/// What a global limit decided.
pub struct Exceeded {
    /// 429 or 403.
    pub status: u16,
    /// Seconds for `Retry-After` (429 only).
    pub retry_after: Option<u64>,
}

async fn ask(env: &Env, check: &GlobalLimitCheck, now_ms: u64) -> Result<CheckAnswer> {
    let body = CheckRequest {
        key: hex::encode(&check.key),
        requests: check.quota.requests,
        period_ms: check.quota.period_ms,
        mitigation_ms: check.quota.mitigation_ms,
        now_ms,
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(&body)?.into()));
    let req = Request::new_with_init("https://limits.internal/check", &init)?;
    let stub = env
        .durable_object("LIMITS")?
        .id_from_name(&check.rule_id)?
        .get_stub()?;
    stub.fetch_with_request(req)
        .await?
        .json::<CheckAnswer>()
        .await
}

/// Runs the global checks in order. Returns the first enforced limit that is exceeded, and
/// every rule that was exceeded (enforced or shadow) for the logs and counts.
pub async fn check_all(
    env: &Env,
    checks: &[GlobalLimitCheck],
    now_ms: u64,
) -> (Option<Exceeded>, Vec<(String, &'static str)>) {
    let mut exceeded = Vec::new();
    for check in checks {
        let answer = match ask(env, check, now_ms).await {
            Ok(a) => a,
            Err(e) => {
                worker::console_error!(
                    "global limit {} not checked (fail open): {e}",
                    check.rule_id
                );
                continue;
            }
        };
        if !answer.limited {
            continue;
        }
        exceeded.push((check.rule_id.to_string(), check.mode.as_str()));
        if check.mode == Mode::Enforce {
            let stop = match check.on_exceed {
                OnExceed::TooManyRequests => Exceeded {
                    status: 429,
                    retry_after: Some(answer.retry_after_secs.max(1)),
                },
                OnExceed::Block => Exceeded {
                    status: 403,
                    retry_after: None,
                },
            };
            return (Some(stop), exceeded);
        }
    }
    (None, exceeded)
}
