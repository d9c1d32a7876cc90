//! Wake-ups for long polls: one `tokio::sync::watch` channel per (environment, pack), bumped
//! after every committed pointer move, so a waiting `GET /v1/gateways/desired` answers at once.
//!
//! The channel carries only a generation number; the poller re-reads the database, which stays
//! the source of truth. A move made by another control-plane process on the same database does
//! not wake this one's pollers: they re-read the pointer every second while they wait (see
//! `api_gateway`), which bounds that delay.

use std::collections::HashMap;

use tokio::sync::{watch, Mutex};

/// Per (environment, pack) change notifications.
#[derive(Debug, Default)]
pub(crate) struct DesiredWatch {
    channels: Mutex<HashMap<(String, String), watch::Sender<u64>>>,
}

impl DesiredWatch {
    /// A receiver that sees every later [`DesiredWatch::notify`] for this pair.
    pub(crate) async fn subscribe(&self, environment: &str, pack: &str) -> watch::Receiver<u64> {
        let mut map = self.channels.lock().await;
        map.entry((environment.to_owned(), pack.to_owned()))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wake everyone waiting on this pair.
    pub(crate) async fn notify(&self, environment: &str, pack: &str) {
        let map = self.channels.lock().await;
        if let Some(tx) = map.get(&(environment.to_owned(), pack.to_owned())) {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}
