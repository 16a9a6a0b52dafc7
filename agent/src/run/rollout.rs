//! This server's part in a staged rollout: its health gates judged while
//! it serves the rollout's configuration, and the rollout moved on (or
//! back) in etcd, as every agent would move it.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use tracing::{info, warn};

use super::{now_secs, within, Agent};
use crate::fleet::{failed_gate, next_step, Counts, Next, Rollout, RolloutState, Status};

/// A server's part in a rollout, judged by the agent.
pub(super) struct Judged {
    pub id: String,
    pub failed: Option<String>,
    pub counts: Counts,
    pub ready: bool,
}

impl Agent {
    pub(super) fn rollout(&self) -> Result<Option<(Rollout, i64)>, String> {
        let Some((value, revision)) = self.etcd.view.get(&self.opts.keys.rollout()) else {
            return Ok(None);
        };
        let rollout: Rollout = serde_json::from_slice(value)
            .map_err(|e| format!("{}: {e}", self.opts.keys.rollout()))?;
        rollout
            .check()
            .map_err(|e| format!("{}: {e}", self.opts.keys.rollout()))?;
        Ok(Some((rollout, *revision)))
    }

    /// Judges this server's health gates while it serves a rollout's
    /// configuration: once a gate failed, it stays failed.
    /// `counts` were read at `read_at`: a reading from before the
    /// configuration was applied is never its baseline (its sums are the
    /// old configuration's steps').
    pub(super) fn judge(&mut self, counts: Option<Counts>, read_at: Instant) {
        if let Some(applied) = self
            .config
            .applied
            .as_mut()
            .filter(|a| a.baseline.is_none() && read_at > a.at)
        {
            applied.baseline = counts;
        }
        let Ok(Some((rollout, _))) = self.rollout() else {
            self.judged = None;
            return;
        };
        let serving = self
            .config
            .applied
            .as_ref()
            .filter(|a| a.rollout.as_deref() == Some(rollout.id.as_str()));
        let Some(applied) = serving else {
            // Refused, or not in a stage that has it.
            if self.judged.as_ref().is_some_and(|j| j.id != rollout.id)
                || !rollout.serves(&self.opts.name)
            {
                self.judged = None;
            }
            return;
        };
        if self
            .judged
            .as_ref()
            .is_some_and(|j| j.id == rollout.id && j.failed.is_some())
        {
            return;
        }
        let Some(counts) = counts else {
            // Its health cannot be read: not ready, and after the
            // rollout's silence gate, failed.
            let silent = self.nginx.silent_since.map_or(0, |t| t.elapsed().as_secs());
            let failed = (silent > rollout.gates.max_silent_secs).then(|| {
                format!(
                    "its nginx has not answered for {silent} s, over {} s",
                    rollout.gates.max_silent_secs
                )
            });
            if let Some(why) = &failed {
                warn!("rollout {}: a health gate failed: {why}", rollout.id);
            }
            let counts = self
                .judged
                .as_ref()
                .filter(|j| j.id == rollout.id)
                .map_or_else(Counts::default, |j| j.counts);
            self.judged = Some(Judged {
                id: rollout.id.clone(),
                failed,
                counts,
                ready: false,
            });
            return;
        };
        let Some(baseline) = applied.baseline else {
            // No reading of the configuration it serves yet: nothing to
            // judge, so not ready.
            self.judged = Some(Judged {
                id: rollout.id.clone(),
                failed: None,
                counts: Counts::default(),
                ready: false,
            });
            return;
        };
        let since = counts.since(&baseline);
        let failed = failed_gate(&rollout.gates, &since);
        if let Some(why) = &failed {
            warn!("rollout {}: a health gate failed: {why}", rollout.id);
        }
        let ready =
            failed.is_none() && applied.at.elapsed() >= Duration::from_secs(rollout.hold_secs);
        self.judged = Some(Judged {
            id: rollout.id.clone(),
            failed,
            counts: since,
            ready,
        });
    }

    /// Moves the running rollout on, or reverts it, as every agent
    /// would: the change is made only if nobody changed the rollout since
    /// this agent read it.
    pub(super) async fn drive_rollout(&mut self, client: &mut Client) -> Result<(), String> {
        let Ok(Some((mut rollout, revision))) = self.rollout() else {
            return Ok(());
        };
        let statuses = self.server_statuses();
        let now = now_secs();
        let next = next_step(
            &rollout,
            now,
            |s| statuses.get(s).cloned(),
            |s| self.etcd.heard.get(s).map(|t| t.elapsed().as_secs()),
        );
        let guards = self.rollout_guards(&rollout, revision, &next);
        let reverts = matches!(next, Next::Revert(_));
        let Some((line, also)) = self.take_step(&mut rollout, next, now) else {
            return Ok(());
        };
        rollout
            .history
            .push(format!("{now} {line} (by {})", self.opts.name));
        let text = serde_json::to_string(&rollout).map_err(|e| e.to_string())?;
        let mut ops = vec![TxnOp::put(self.opts.keys.rollout(), text.as_str(), None)];
        ops.extend(also);
        let done = within(
            self.opts.timeout,
            "moving the rollout",
            client.txn(Txn::new().when(guards).and_then(ops)),
        )
        .await?;
        if done.succeeded() && reverts {
            warn!("rollout {}: {line}", rollout.id);
        } else if done.succeeded() {
            info!("rollout {}: {line}", rollout.id);
        }
        Ok(())
    }

    /// Every server's key as last read, by name.
    fn server_statuses(&self) -> BTreeMap<String, Status> {
        self.etcd
            .view
            .iter()
            .filter_map(|(k, (v, _))| {
                let name = self.opts.keys.server_of(k)?;
                Some((name.to_string(), serde_json::from_slice(v).ok()?))
            })
            .collect()
    }

    /// What must hold for the move to be written: the rollout key as
    /// read; to move on, no member's key changed since it was read (one
    /// that just failed a gate is heard first); to finish, nobody put
    /// another fleet configuration meanwhile.
    fn rollout_guards(&self, rollout: &Rollout, revision: i64, next: &Next) -> Vec<Compare> {
        let read = |key: String| {
            let at = self.etcd.view.get(&key).map_or(0, |(_, r)| *r);
            Compare::mod_revision(key, CompareOp::Equal, at)
        };
        let mut guards = vec![Compare::mod_revision(
            self.opts.keys.rollout(),
            CompareOp::Equal,
            revision,
        )];
        if matches!(next, Next::Advance | Next::Finish) {
            guards.extend(
                rollout
                    .members()
                    .iter()
                    .map(|s| read(self.opts.keys.server(s))),
            );
        }
        if *next == Next::Finish {
            guards.push(read(self.opts.keys.config()));
        }
        guards
    }

    /// The rollout as `next` leaves it, the line its history gets and the
    /// other writes that go with it; `None` when it waits.
    fn take_step(
        &self,
        rollout: &mut Rollout,
        next: Next,
        now: u64,
    ) -> Option<(String, Vec<TxnOp>)> {
        let mut also = Vec::new();
        let line = match next {
            Next::Wait => return None,
            Next::Advance => {
                rollout.stage += 1;
                rollout.stage_started = now;
                format!(
                    "stage {} ({} of {} servers) started",
                    rollout.stage,
                    rollout.stages[rollout.stage],
                    rollout.servers.len()
                )
            }
            Next::Finish => {
                rollout.state = RolloutState::Done;
                rollout.reason = Some("every stage passed its health gates".into());
                also.push(TxnOp::put(
                    self.opts.keys.config(),
                    rollout.config.as_str(),
                    None,
                ));
                // Its signature goes with it (none: the fleet's
                // configuration is unsigned too).
                let sig = self.opts.keys.config_sig();
                also.push(match self.etcd.view.get(&self.opts.keys.rollout_sig()) {
                    Some((signature, _)) => TxnOp::put(sig, signature.clone(), None),
                    None => TxnOp::delete(sig, None),
                });
                "done: the fleet's configuration is the new one".to_string()
            }
            Next::Revert(why) => {
                rollout.state = RolloutState::Reverted;
                rollout.reason = Some(why.clone());
                format!("reverted at stage {}: {why}", rollout.stage)
            }
        };
        Some((line, also))
    }
}
