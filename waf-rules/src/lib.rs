//! `waf-rules`: the WAF engine that both the edge worker and the origin proxy run.
//!
//! The core is pure Rust with no I/O, clock or runtime, so it compiles to native code and to
//! `wasm32-unknown-unknown`. Hosts turn their request into an [`HttpRequest`] and a verdict into a
//! response.
//!
//! The SecLang front end runs the OWASP Core Rule Set as written: [`RuleSet::from_sources`]
//! parses and compiles the rule files once (every regex is Rust `regex`, so matching is linear
//! time), and [`RuleSet::evaluate`] judges one request with CRS's own anomaly scoring.
#![warn(missing_docs)]

pub mod config;
pub mod crs;
pub mod custom;
pub mod engine;
pub mod error;
pub mod expr;
#[doc(hidden)]
pub mod fuzzing;
pub mod harness;
pub mod input;
pub mod macros;
pub mod operator;
pub mod prefilter;
pub mod ratelimit;
pub mod request;
pub mod seclang;
pub mod transform;

pub use config::{Limits, Mode, WafConfig};
pub use custom::{CustomAction, CustomRules, CustomVerdict};
pub use engine::{Action, RuleMatch, RuleSet, Severity, Verdict};
pub use error::{LoadError, Location};
pub use input::HttpRequest;
pub use ratelimit::{LimitStore, RateLimiter};
