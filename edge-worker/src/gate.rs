//! The flash-sale gate: guarded paths go through the waiting room before anything else.
//!
//! One Durable Object per room ([`WaitingRoom`], binding `ROOMS`, named after the room id) runs
//! the pure `waiting_room::Room` — the only place that decides, so the admission rate is global
//! and exact — and persists its O(1) state after every change. The worker:
//!
//! - lets a request with a valid admission cookie ([`ADMIT_COOKIE`]) through;
//! - otherwise gives a shopper without a valid ticket cookie ([`TICKET_COOKIE`]) a ticket
//!   (`join`), asks the room about the ticket (`poll`), and answers with the waiting page
//!   (HTML with JS polling and a meta refresh, or JSON for `Accept: application/json`);
//! - once the ticket's turn comes, sets the signed admission cookie (bound to room and ticket,
//!   expiring at the session end) and redirects (307, so methods and bodies are kept) to the
//!   same URL — or, for the waiting page's own JSON polls, answers `"state": "admitted"` so the
//!   page reloads itself.
//!
//! Tickets and admission tokens are HMAC-SHA256 signed with the secret `ROOM_SIGNING_KEY`
//! (at least 32 bytes; `ROOM_SIGNING_KEY_PREVIOUS` stays valid during a rotation). The origin
//! proxy can verify the admission cookie with `waiting_room::token::Keys::verify_admission`.
//! If the room cannot be reached, the room's `failure-mode` decides: open (let through) or
//! closed (503 with `Retry-After`).
// The `durable_object` macro generates undocumented exports for the runtime.
#![allow(missing_docs)]

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use waiting_room::config::FailureMode;
use waiting_room::page::{render_waiting_page, WaitingStatus};
use waiting_room::token::{self, Keys};
use waiting_room::{PollOutcome, Room, RoomConfig, Ticket};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
};

use crate::error::EdgeError;

/// The ticket cookie: a signed place in line.
pub const TICKET_COOKIE: &str = "fe_ticket";
/// The admission cookie: a signed, expiring pass for the room's guarded paths.
pub const ADMIT_COOKIE: &str = "fe_admit";
const EMBEDDED_ROOM: &str = include_str!("../rooms/flash-sale.toml");

/// The room of this deployment: var `ROOM_CONFIG` (TOML text, or `off`), else the embedded file.
pub fn room_config(env: &Env) -> std::result::Result<Option<RoomConfig>, EdgeError> {
    let (name, text) = match env.var("ROOM_CONFIG").map(|v| v.to_string()) {
        Ok(v) if v.trim() == "off" => return Ok(None),
        Ok(v) => ("ROOM_CONFIG".to_owned(), v),
        Err(_) => ("rooms/flash-sale.toml".to_owned(), EMBEDDED_ROOM.to_owned()),
    };
    RoomConfig::from_toml(&name, &text)
        .map(Some)
        .map_err(|e| EdgeError::Misconfigured(format!("waiting room: {e}")))
}

fn keys(env: &Env) -> std::result::Result<Keys, EdgeError> {
    let current = env
        .secret("ROOM_SIGNING_KEY")
        .map(|s| s.to_string())
        .map_err(|_| EdgeError::Misconfigured("secret ROOM_SIGNING_KEY is not set".into()))?;
    let previous = env
        .secret("ROOM_SIGNING_KEY_PREVIOUS")
        .ok()
        .map(|s| s.to_string());
    Keys::new(
        ("k1", current.trim().as_bytes()),
        previous.as_deref().map(|p| ("k0", p.trim().as_bytes())),
    )
    .map_err(|e| EdgeError::Misconfigured(format!("ROOM_SIGNING_KEY: {e}")))
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum RoomRequest {
    Join,
    Poll { ticket: Ticket },
    Stats,
}

/// Default time between two reads of the origin's health by a room (var
/// `ORIGIN_HEALTH_EVERY_MS`).
const ORIGIN_HEALTH_EVERY_MS: u64 = 5_000;

/// The origin proxy's `/health` summary as the room's closed loop reads it; `None` when the
/// body is not one.
pub fn origin_health_from_json(
    body: &serde_json::Value,
) -> Option<waiting_room::room::OriginHealth> {
    let p99 = body.get("upstream_p99_ms")?.as_f64().unwrap_or(0.0);
    Some(waiting_room::room::OriginHealth {
        p99_latency_ms: p99.clamp(0.0, f64::from(u32::MAX)) as u32,
        error_rate_5xx: body.get("error_5xx_rate")?.as_f64()?,
        shed_count: body.get("shed")?.as_u64()?,
    })
}

#[derive(Serialize, Deserialize)]
struct RoomAnswer {
    ticket: Option<Ticket>,
    outcome: PollOutcome,
}

/// The Durable Object of one waiting room.
#[durable_object(fetch)]
pub struct WaitingRoom {
    state: State,
    env: Env,
    room: RefCell<Option<Room>>,
    health_read_at: std::cell::Cell<u64>,
}

impl WaitingRoom {
    /// The closed loop: at most every `ORIGIN_HEALTH_EVERY_MS`, reads the origin proxy's health
    /// (var `ORIGIN_HEALTH_URL`, its admin `/health`) and lets the room adjust its rate.
    async fn observe_origin(&self, now: u64) {
        let Ok(url) = self.env.var("ORIGIN_HEALTH_URL").map(|v| v.to_string()) else {
            return;
        };
        let every = self
            .env
            .var("ORIGIN_HEALTH_EVERY_MS")
            .ok()
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(ORIGIN_HEALTH_EVERY_MS);
        if now.saturating_sub(self.health_read_at.get()) < every {
            return;
        }
        self.health_read_at.set(now);
        let health = match worker::Fetch::Url(match url.parse() {
            Ok(u) => u,
            Err(_) => return,
        })
        .send()
        .await
        {
            Ok(mut resp) => resp
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| origin_health_from_json(&b)),
            Err(e) => {
                worker::console_warn!("room: origin health unreadable: {e}");
                None
            }
        };
        if let Some(h) = health {
            if let Some(room) = self.room.borrow_mut().as_mut() {
                let before = room.stats(now).rate_per_minute;
                let after = room.observe_origin(h, now);
                if before != after {
                    worker::console_log!(
                        "room {}: admission rate {before} -> {after}/min (origin {h:?})",
                        room.config().id
                    );
                }
            }
        }
    }

    async fn ensure_loaded(&self, config: &RoomConfig, now: u64) -> Result<()> {
        if self
            .room
            .borrow()
            .as_ref()
            .is_some_and(|r| r.config().id == config.id)
        {
            return Ok(());
        }
        let saved = self.state.storage().get::<String>("room").await?;
        let restored = saved.and_then(|json| Room::from_json(config, &json).ok());
        let room = match restored {
            Some(r) => r,
            None => {
                use ring::rand::SecureRandom;
                let mut seed = [0u8; 8];
                let _ = ring::rand::SystemRandom::new().fill(&mut seed);
                Room::new(config, u64::from_le_bytes(seed), now)
            }
        };
        let mut slot = self.room.borrow_mut();
        if slot.as_ref().is_none_or(|r| r.config().id != config.id) {
            *slot = Some(room);
        }
        Ok(())
    }
}

impl DurableObject for WaitingRoom {
    fn new(state: State, env: Env) -> Self {
        WaitingRoom {
            state,
            env,
            room: RefCell::new(None),
            health_read_at: std::cell::Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let now = worker::Date::now().as_millis();
        let config = match room_config(&self.env) {
            Ok(Some(c)) => c,
            Ok(None) => return Response::error("no waiting room configured", 404),
            Err(e) => return Response::error(e.reason(), 500),
        };
        let Ok(op) = req.json::<RoomRequest>().await else {
            return Response::error("expected a room operation", 400);
        };
        self.ensure_loaded(&config, now).await?;
        self.observe_origin(now).await;
        if let RoomRequest::Stats = op {
            let stats = self.room.borrow_mut().as_mut().map(|r| r.stats(now));
            return Response::from_json(&stats);
        }
        let (answer, json) = {
            let mut slot = self.room.borrow_mut();
            let Some(room) = slot.as_mut() else {
                return Response::error("room not loaded", 500);
            };
            room.tick(now);
            let answer = match op {
                RoomRequest::Join => match room.join(now) {
                    Ok(ticket) => {
                        let outcome = room.poll(&ticket, now).unwrap_or(PollOutcome::Expired);
                        RoomAnswer {
                            ticket: Some(ticket),
                            outcome,
                        }
                    }
                    Err(waiting_room::room::JoinError::NotOpen { opens_at }) => RoomAnswer {
                        ticket: None,
                        outcome: PollOutcome::NotOpen { opens_at },
                    },
                    Err(_) => RoomAnswer {
                        ticket: None,
                        outcome: PollOutcome::Closed,
                    },
                },
                RoomRequest::Poll { ticket } => {
                    let outcome = room.poll(&ticket, now).unwrap_or(PollOutcome::Expired);
                    RoomAnswer {
                        ticket: Some(ticket),
                        outcome,
                    }
                }
                RoomRequest::Stats => return Response::error("stats are answered above", 500),
            };
            (answer, room.to_json())
        };
        self.state.storage().put("room", json).await?;
        Response::from_json(&answer)
    }
}

async fn ask_room(env: &Env, room_id: &str, op: &RoomRequest) -> Result<RoomAnswer> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(op)?.into()));
    let req = Request::new_with_init("https://room.internal/op", &init)?;
    let stub = env
        .durable_object("ROOMS")?
        .id_from_name(room_id)?
        .get_stub()?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "room answered {}",
            resp.status_code()
        )));
    }
    resp.json::<RoomAnswer>().await
}

/// Runs the gate for one request. `None`: go on (not guarded, bypassed, or admitted).
pub async fn handle(req: &Request, env: &Env, now: u64) -> Result<Option<Response>> {
    let config = match room_config(env) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) => return crate::error::respond(&e, None).map(Some),
    };
    let path = req.path();
    if !config.guards(&path) || config.bypasses(&path, crate::forward::client_ip(req)) {
        return Ok(None);
    }
    let keys = match keys(env) {
        Ok(k) => k,
        Err(e) => return crate::error::respond(&e, None).map(Some),
    };
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    if let Some(pass) = token::cookie_value(&cookies, ADMIT_COOKIE) {
        if keys.verify_admission(pass, &config.id, now).is_ok() {
            return Ok(None);
        }
    }
    let held = token::cookie_value(&cookies, TICKET_COOKIE)
        .and_then(|t| keys.verify_ticket(t, &config.id, now).ok());
    let op = match &held {
        Some(ticket) => RoomRequest::Poll {
            ticket: ticket.clone(),
        },
        None => RoomRequest::Join,
    };
    let answer = match ask_room(env, &config.id, &op).await {
        Ok(a) => a,
        Err(e) => {
            worker::console_error!("waiting room {} unreachable: {e}", config.id);
            return match config.failure_mode {
                FailureMode::Open => Ok(None),
                FailureMode::Closed => {
                    let resp = Response::error("The queue is busy, please retry shortly.", 503)?;
                    resp.headers().set("retry-after", "5")?;
                    Ok(Some(resp))
                }
            };
        }
    };
    let mut set_cookies = Vec::new();
    if held.is_none() {
        if let Some(ticket) = &answer.ticket {
            let expires = config.ticket_expires_at();
            set_cookies.push(token::set_cookie(
                TICKET_COOKIE,
                &keys.sign_ticket(ticket, expires),
                token::max_age_secs(expires, now),
            ));
        }
    }
    let url = req.url()?;
    match (answer.outcome, &answer.ticket) {
        (PollOutcome::Admitted { session_expires_at }, Some(ticket)) => {
            let pass = keys.sign_admission(&config.id, ticket.seq, session_expires_at);
            set_cookies.push(token::set_cookie(
                ADMIT_COOKIE,
                &pass,
                token::max_age_secs(session_expires_at, now),
            ));
            // The waiting page polls with `Accept: application/json` and reloads itself on
            // "admitted"; a browser or app asking for the page itself is sent on at once.
            let resp = if wants_json(req)? {
                let status = WaitingStatus::new(&config, &answer.outcome);
                let r = Response::ok(status.to_json())?;
                r.headers().set("content-type", "application/json")?;
                r
            } else {
                let r = Response::empty()?.with_status(307);
                r.headers().set("location", url.as_str())?;
                r
            };
            finish(resp, &set_cookies).map(Some)
        }
        (PollOutcome::Expired, _) => {
            // The turn passed unclaimed: drop the ticket; the next visit joins again.
            set_cookies.push(token::clear_cookie(TICKET_COOKIE));
            let resp = Response::empty()?.with_status(307);
            resp.headers().set("location", url.as_str())?;
            finish(resp, &set_cookies).map(Some)
        }
        (outcome, _) => {
            let status = WaitingStatus::new(&config, &outcome);
            let resp = if wants_json(req)? {
                let r = Response::ok(status.to_json())?;
                r.headers().set("content-type", "application/json")?;
                r
            } else {
                Response::from_html(render_waiting_page(&config, &status))?
            };
            finish(resp, &set_cookies).map(Some)
        }
    }
}

fn wants_json(req: &Request) -> Result<bool> {
    Ok(req
        .headers()
        .get("accept")?
        .is_some_and(|a| a.contains("application/json")))
}

fn finish(resp: Response, set_cookies: &[String]) -> Result<Response> {
    let h = resp.headers();
    h.set("cache-control", "no-store")?;
    for c in set_cookies {
        h.append("set-cookie", c)?;
    }
    Ok(resp)
}

/// The room's counters (`/__edge/room`, admin only).
pub async fn stats(env: &Env) -> Result<Response> {
    let config = match room_config(env) {
        Ok(Some(c)) => c,
        Ok(None) => return Response::error("no waiting room configured", 404),
        Err(e) => return crate::error::respond(&e, None),
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(&RoomRequest::Stats)?.into()));
    let req = Request::new_with_init("https://room.internal/op", &init)?;
    let stub = env
        .durable_object("ROOMS")?
        .id_from_name(&config.id)?
        .get_stub()?;
    stub.fetch_with_request(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_origin_proxy_health_summary() {
        let body = serde_json::json!({
            "status": "degraded", "upstream_p99_ms": 1250.5, "error_5xx_rate": 0.04, "shed": 3
        });
        let h = origin_health_from_json(&body).expect("health");
        assert_eq!(h.p99_latency_ms, 1250);
        assert_eq!(h.shed_count, 3);
        assert!((h.error_rate_5xx - 0.04).abs() < 1e-9);
        let idle = serde_json::json!({ "upstream_p99_ms": null, "error_5xx_rate": 0.0, "shed": 0 });
        assert_eq!(
            origin_health_from_json(&idle).map(|h| h.p99_latency_ms),
            Some(0)
        );
        assert!(origin_health_from_json(&serde_json::json!({ "status": "ok" })).is_none());
    }
}
