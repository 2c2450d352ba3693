//! `static-sync`: the release engineer's tool for flash-sale pages, and the data formats the
//! edge worker reads.
//!
//! # Why the go-live is data, not a deploy
//!
//! A scheduled version is uploaded days ahead into the worker's KV namespace (binding `SITE`):
//! every file once, keyed by its SHA-256 (`blob/<sha256>`), then a manifest per version
//! (`manifest/<version-id>`). One more key, `release`, names the live version, the previous one
//! and the scheduled one with its time. The worker picks `next` once `now >= next.at`, else
//! `current`. So going live at midnight needs no deploy and no write: the pointer already says
//! when. Rolling back is one write of `release`. Because blobs and manifests are immutable and
//! written before anything points at them, a shopper never sees half a version. The exact keys
//! and JSON shapes are in [`manifest`].
//!
//! # Two faces
//!
//! Without default features this crate is [`manifest`] (the KV formats and the pure rules the
//! worker applies: [`manifest::Release::live_version`], [`manifest::Manifest::resolve`]) and
//! [`plan`] (the pure diff), with serde and serde_json only; it builds for
//! `wasm32-unknown-unknown` and `edge-worker` depends on it that way:
//!
//! ```toml
//! static-sync = { path = "../static-sync", default-features = false }
//! ```
//!
//! The default `cli` feature adds the tool: [`check`], [`build`], [`store`] (a `Store` trait
//! with a wrangler-backed and an in-memory implementation), [`push`] and [`verify`].
#![warn(missing_docs)]

pub mod manifest;
pub mod plan;

#[cfg(feature = "cli")]
pub mod build;
#[cfg(feature = "cli")]
pub mod check;
#[cfg(feature = "cli")]
pub mod error;
#[cfg(feature = "cli")]
pub mod html;
#[cfg(feature = "cli")]
pub mod push;
#[cfg(feature = "cli")]
pub mod refs;
#[cfg(feature = "cli")]
pub mod site;
#[cfg(feature = "cli")]
pub mod store;
#[cfg(feature = "cli")]
pub mod verify;
