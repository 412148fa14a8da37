//! Plugin control, the guard: after a version becomes active by an install or a promotion, its
//! first records' failure rate (dead letters of any kind) is compared with its predecessor's,
//! fleet-wide from the outcome log; a version far worse is rolled back everywhere on its own,
//! leaving its dead letters for redrive. Shadow promotions have their own bar (`shadow_proven`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{InstallError, PluginControl};
use crate::db;

/// When the guard calls a new version bad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardPolicy {
    /// Records the new version decides (fleet-wide) before it is judged.
    pub window: u64,
    /// Failure rate above the predecessor's, in percentage points, that is too much...
    pub points: f64,
    /// ...when it is also this many times the predecessor's.
    pub factor: f64,
    /// How often the outcome log is read.
    pub every: Duration,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Self {
            window: 200,
            points: 20.0,
            factor: 5.0,
            every: Duration::from_secs(1),
        }
    }
}

/// The guard's word on a version that has decided enough records.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough records yet.
    Watching,
    Passed(String),
    RollBack(String),
}

impl GuardPolicy {
    /// Judge a version by its (decided, dead-lettered) records against its predecessor's.
    pub fn judge(&self, new: (i64, i64), previous: (i64, i64)) -> Verdict {
        let (decided, failed) = new;
        if decided < i64::try_from(self.window).unwrap_or(i64::MAX) || decided <= 0 {
            return Verdict::Watching;
        }
        let rate = |(decided, failed): (i64, i64)| {
            if decided > 0 {
                100.0 * failed as f64 / decided as f64
            } else {
                0.0
            }
        };
        let (now, before) = (rate(new), rate(previous));
        let described = format!(
            "{failed} of its first {decided} records were dead letters ({now:.1} %), against \
             {before:.1} % for the previous version ({} of {})",
            previous.1, previous.0
        );
        if now - before > self.points && now > self.factor * before {
            Verdict::RollBack(format!(
                "{described}: more than {} points and {}x worse",
                self.points, self.factor
            ))
        } else {
            Verdict::Passed(described)
        }
    }
}

impl PluginControl {
    /// Watch newly activated versions until shutdown (every instance runs it; a rollback only
    /// happens while the version is still the active one, so two instances cannot both do it).
    pub async fn guard(
        self: std::sync::Arc<Self>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.policy.guard.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if let Err(e) = self.guard_once().await {
                // The database being away delays the judgement, nothing else.
                tracing::debug!(error = %e, "the plugin guard could not read the outcome log");
            }
        }
    }

    async fn guard_once(&self) -> Result<(), InstallError> {
        for active in db::plugins::guard_watching(&self.pool).await? {
            // One plugin's trouble does not keep the others from being judged.
            if let Err(e) = self.judge(&active).await {
                tracing::warn!(plugin = %active.name, error = %e, "the plugin guard could not judge");
            }
        }
        Ok(())
    }

    async fn judge(&self, active: &db::plugins::Active) -> Result<(), InstallError> {
        let (name, version) = (active.name.as_str(), active.version.as_str());
        let new =
            db::plugins::outcome_tally(&self.pool, (name, version), active.activated_at).await?;
        let previous = match &active.previous_version {
            Some(previous) => {
                db::plugins::recent_tally(&self.pool, (name, previous), active.activated_at).await?
            }
            None => (0, 0),
        };
        match self.policy.guard.judge(new, previous) {
            Verdict::Watching => {}
            Verdict::Passed(why) => {
                db::plugins::guard_judged(&self.pool, (name, version), "passed", &why).await?;
                tracing::info!(plugin = name, %version, %why, "the guard lets the new version stand");
            }
            Verdict::RollBack(why) if active.previous_version.is_none() => {
                let why = format!("{why}; there is no previous version to roll back to");
                db::plugins::guard_judged(&self.pool, (name, version), "failed", &why).await?;
                tracing::error!(plugin = name, %version, reason = %why,
                                "the guard found the new version bad and cannot roll it back");
            }
            Verdict::RollBack(why) => self.guard_rollback(name, version, &why).await?,
        }
        Ok(())
    }

    /// Roll `version` of `name` back to its predecessor, fleet-wide, if it is still the active
    /// version under watch.
    async fn guard_rollback(
        &self,
        name: &str,
        version: &str,
        why: &str,
    ) -> Result<(), InstallError> {
        let mut tx = self.pool.begin().await?;
        let Some(current) = db::plugins::lock_active(&mut tx, name).await? else {
            return Ok(());
        };
        if current.version != version
            || current.guard_state.as_deref() != Some("watching")
            || !current.guard
        {
            return Ok(()); // changed or turned off meanwhile, here or elsewhere
        }
        let Some(previous) = current.previous_version.clone() else {
            return Ok(());
        };
        db::plugins::set_active(&mut tx, name, &previous, Some(version), "rollback").await?;
        db::plugins::guard_rolled_back(&mut tx, name, version, why).await?;
        tx.commit().await?;
        self.metrics.guard_rolled_back(name);
        tracing::warn!(plugin = name, %version, to = %previous, reason = %why,
                       "the guard rolled a new version back; its dead letters wait for redrive");
        self.sync_all().await
    }

    /// Whether the shadow candidate of `name` may be promoted: at least the configured number of
    /// records compared, and no difference.
    pub(super) async fn shadow_proven(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(), InstallError> {
        let (stats, differences) = db::plugins::shadow_report(&self.pool, name, version).await?;
        let min = self.policy.shadow_min_compared;
        if stats.compared < i64::try_from(min).unwrap_or(i64::MAX) {
            return Err(InstallError::Unproven(format!(
                "the candidate was compared on {} records, at least {min} are needed \
                 (promote with force=true to skip the check)",
                stats.compared
            )));
        }
        if stats.agreed < stats.compared || !differences.is_empty() {
            return Err(InstallError::Unproven(format!(
                "the candidate differs from the active version on {} of {} records \
                 (see GET /plugins/{name}/shadow; promote with force=true to skip the check)",
                stats.compared - stats.agreed,
                stats.compared
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_far_worse_than_its_predecessor_is_rolled_back() {
        let policy = GuardPolicy::default();
        assert_eq!(policy.judge((150, 150), (1000, 0)), Verdict::Watching);
        let Verdict::RollBack(why) = policy.judge((200, 60), (1000, 10)) else {
            panic!("30 % against 1 %")
        };
        assert!(why.contains("60 of its first 200"), "{why}");
        assert!(matches!(
            policy.judge((200, 60), (1000, 0)),
            Verdict::RollBack(_)
        ));
    }

    #[test]
    fn a_version_about_as_good_or_bad_as_its_predecessor_stands() {
        let policy = GuardPolicy::default();
        // 15 points worse: under the 20-point bar.
        assert!(matches!(
            policy.judge((200, 30), (1000, 0)),
            Verdict::Passed(_)
        ));
        // 25 points worse but not 5x: 45 % against 20 %.
        assert!(matches!(
            policy.judge((200, 90), (1000, 200)),
            Verdict::Passed(_)
        ));
        assert!(matches!(
            policy.judge((5000, 0), (0, 0)),
            Verdict::Passed(_)
        ));
    }
}
