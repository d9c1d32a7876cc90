//! The order in which event writes commit, so `received_at` grows in commit order.
//!
//! `palisade events --follow` pages by `(received_at, request_id)`: a write that committed after
//! a later-stamped one would be skipped by a follower that had already read past its stamp. A
//! write takes a [`Ticket`] (its stamp, never below the previous one) once it holds a database
//! connection, and commits only on its turn: when every earlier ticket has finished, committed or
//! not. On Postgres the rows of a batch are written before the turn, so batches from many
//! gateways insert in parallel and only the shared rows (the rollups) and the commit are taken
//! in order; SQLite, with one writer, takes its turn before writing anything.
//!
//! A turn waited for longer than [`TURN_TIMEOUT`] fails the write: 503 `BUSY` with
//! `Retry-After`, and the gateway sends the batch again. It is short for two reasons: the stamp is taken before the rows are written, so the
//! time from stamp to commit (the write, then the wait) stays inside the 2 s that
//! `events --follow` re-reads behind its cursor for other processes' commits; and two batches
//! that carry the same request id can each wait for the other, one on the row the other
//! inserted and one on its turn, which the timeout breaks (a gateway sends one batch at a time
//! and resends only after 10 s, so such a pair is rare). A write is never cancelled with its
//! caller: it runs on a task of its own (`App::event_tasks`), so its ticket ends after its
//! commit or rollback, whatever the gateway does.
//!
//! Stamps are unique and start above the newest `received_at` stored
//! ([`CommitOrder::starting_at`]), so a clock that is behind after a restart cannot stamp new
//! events at or below ones a follower has read.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;

/// How long a write waits for its turn.
pub(crate) const TURN_TIMEOUT: Duration = Duration::from_secs(1);
/// Event writes that may hold a database connection at once: the rest of the pool (8) stays
/// free for reads, reports and sessions while a burst of batches waits for turns.
pub(crate) const MAX_WRITERS: usize = 4;

/// The order's state lives in the channel that announces turns: a change to it wakes the
/// waiters only when the lowest unfinished ticket moved.
#[derive(Debug)]
pub(crate) struct CommitOrder {
    state: watch::Sender<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    last_stamp: i64,
    /// Finished tickets above the lowest unfinished one.
    finished: BTreeSet<u64>,
    /// The lowest ticket not finished yet: whose turn it is.
    lowest: u64,
}

impl Default for CommitOrder {
    fn default() -> Self {
        Self::starting_at(0)
    }
}

impl CommitOrder {
    /// An order whose stamps are never below `stamp` (the newest `received_at` stored).
    pub(crate) fn starting_at(stamp: i64) -> Self {
        Self {
            state: watch::Sender::new(State {
                last_stamp: stamp,
                ..State::default()
            }),
        }
    }

    /// The next ticket, stamped `now`, or one millisecond after the previous stamp when that
    /// is not below `now` (the clock went back, or two writes came in one millisecond).
    ///
    /// Stamps are unique: a follower pages by `(received_at, request_id)`, and two batches with
    /// one stamp would interleave by request id, not by commit, so a follower that read the
    /// first could skip the second's lower ids. They run ahead of the clock only while more
    /// than a thousand writes a second arrive.
    pub(crate) fn take(&self, now: i64) -> Ticket<'_> {
        let mut ticket = (0, 0);
        self.state.send_if_modified(|st| {
            st.last_stamp = st.last_stamp.saturating_add(1).max(now);
            ticket = (st.next, st.last_stamp);
            st.next += 1;
            false
        });
        Ticket {
            order: self,
            n: ticket.0,
            stamp: ticket.1,
        }
    }

    fn finish(&self, n: u64) {
        self.state.send_if_modified(|st| {
            st.finished.insert(n);
            let before = st.lowest;
            loop {
                let lowest = st.lowest;
                if !st.finished.remove(&lowest) {
                    break;
                }
                st.lowest += 1;
            }
            st.lowest != before
        });
    }
}

/// A write's place in the commit order; finished when dropped (after its commit or rollback).
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    order: &'a CommitOrder,
    n: u64,
    /// The write's `received_at`.
    pub(crate) stamp: i64,
}

/// A turn not reached within [`TURN_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("an earlier event write did not finish within {} ms", TURN_TIMEOUT.as_millis())]
pub(crate) struct TurnTimeout;

impl Ticket<'_> {
    /// Wait until every earlier ticket has finished.
    pub(crate) async fn turn(&self) -> Result<(), TurnTimeout> {
        self.turn_within(TURN_TIMEOUT).await
    }

    async fn turn_within(&self, timeout: Duration) -> Result<(), TurnTimeout> {
        let mut rx = self.order.state.subscribe();
        let n = self.n;
        let reached = tokio::time::timeout(timeout, rx.wait_for(|st| st.lowest >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        // The sender lives as long as the order, which outlives its tickets: an error is the
        // timeout.
        if reached {
            Ok(())
        } else {
            Err(TurnTimeout)
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.order.finish(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_come_in_ticket_order_and_stamps_never_go_back() {
        let order = CommitOrder::default();
        assert_eq!(CommitOrder::starting_at(500).take(100).stamp, 501);
        let a = order.take(100);
        let b = order.take(90);
        let c = order.take(120);
        let d = order.take(120);
        assert_eq!((a.stamp, b.stamp, c.stamp, d.stamp), (100, 101, 120, 121));
        drop(d);
        a.turn().await.unwrap();
        // c waits for a and b; b finishing first (a rollback) is not enough.
        let waiting = c.turn();
        tokio::pin!(waiting);
        drop(b);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err(),
            "c's turn came before a finished"
        );
        drop(a);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn a_turn_that_never_comes_times_out() {
        let order = CommitOrder::default();
        let stuck = order.take(1);
        let b = order.take(2);
        assert!(b.turn_within(Duration::from_millis(20)).await.is_err());
        drop(stuck);
        assert!(b.turn_within(Duration::from_millis(20)).await.is_ok());
    }
}
