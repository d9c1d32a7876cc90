//! Palisade's control plane: the registry of pack versions, environments and their deployment
//! pointers, promotion gates, gateway status (desired vs actual), keys and roles, export/import
//! manifests, and the hash-chained admin log, served as a JSON API over HTTP.
//!
//! Storage is sqlx over SQLite by default or Postgres, with portable SQL (see `db`); several
//! processes may share one Postgres. Pack validation, compilation, tests and diffs come from
//! `policy-engine`; this crate adds who may change what, when, and the evidence for it. It does not enforce policy on traffic (that is the
//! gateway) and has no web console yet.
//!
//! Entry points: [`App::open`] (migrate, seed) and [`serve`] (HTTP until shutdown).

pub mod adminlog;
mod api_admin;
mod api_events;
mod api_gateway;
pub mod app;
pub mod clock;
mod console;
pub mod db;
mod deploy;
pub mod envs;
pub mod error;
mod escalations;
pub mod events;
mod extract;
mod fleet;
mod import;
pub mod keys;
pub mod manifest;
mod metrics;
mod order;
mod pointers;
mod promote;
mod registry;
mod routes;
mod server;
pub mod state;
mod watch;

pub use app::{
    App, Config, StartError, DEFAULT_FORGET_GATEWAYS_AFTER_MS, DEFAULT_REPORT_INTERVAL_MS,
};
pub use clock::{Clock, SystemClock};
pub use server::{serve, ServeLimits, MAX_BODY_BYTES, MAX_CONNECTIONS};
