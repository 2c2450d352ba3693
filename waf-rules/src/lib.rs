//! `waf-rules`: the WAF engine that both the edge worker and the origin proxy run.
//!
//! The core is pure Rust with no I/O, clock or runtime, so it compiles to native code and to
//! `wasm32-unknown-unknown`. Hosts turn their request into an [`HttpRequest`] and a verdict into a
//! response.
#![warn(missing_docs)]

pub mod input;

pub use input::HttpRequest;
pub mod custom;
pub mod expr;
pub mod ratelimit;
pub use custom::{CustomAction, CustomRules, CustomVerdict};
pub use ratelimit::{LimitStore, RateLimiter};
