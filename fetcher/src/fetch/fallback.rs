//! What the native paths cannot make: git sources through the shared mirrors, and, with
//! `--builder nix`, Nix's own builder for whatever is left.

use super::*;
use crate::report::Step;
use std::future::Future;

/// The command that makes an entry with Nix's own builder.
fn builder_command(entry: &Entry) -> String {
    match crate::builder::host_drv(entry) {
        Ok(drv) => format!("nix-store --realise {drv}"),
        Err(err) => err.to_string(),
    }
}

pub(super) fn needs_builder(entry: &Entry, reason: impl Into<String>) -> Outcome {
    Outcome::NeedsBuilder {
        reason: reason.into(),
        command: builder_command(entry),
    }
}
impl Run {
    /// Runs `work`, a step that may take minutes without a byte to count, reported as it
    /// starts and ends.
    async fn step<T>(&self, step: Step, label: &str, work: impl Future<Output = T>) -> T {
        let id = self.step_ids.fetch_add(1, Ordering::Relaxed);
        self.progress
            .report(FetchEvent::StepStart { id, step, label });
        let outcome = work.await;
        self.progress.report(FetchEvent::StepEnd { id });
        outcome
    }

    /// Checks out a git source of the entry through the shared mirrors and publishes it.
    pub(super) async fn fetch_git(
        &self,
        entry: &Entry,
        source: GitSource,
        report: &mut EntryReport,
    ) -> Result<Outcome, Error> {
        if entry.post_fetch {
            return Ok(needs_builder(
                entry,
                "fetchgit with a postFetch step changes the checkout",
            ));
        }
        let git = match &self.git {
            Ok(git) => git.clone(),
            Err(why) => return Ok(needs_builder(entry, format!("no usable git: {why}"))),
        };
        let _slot = self.git_slots.acquire().await.map_err(|_| closed())?;
        let cache = self.cache.clone();
        let task_entry = entry.clone();
        let task_source = source.clone();
        let checkout = blocking(move || git.fetch(&task_entry, &task_source, &cache));
        let result = self.step(Step::Git, &entry.name, checkout).await;
        Ok(match result {
            Ok(published) => {
                report.bytes_written = published.file_size;
                Outcome::Fetched {
                    how: How::Git,
                    from: format!("{} {}", source.url, source.rev),
                }
            }
            Err(err) if err.is_fatal() => return Err(err),
            Err(Error::NeedsBuilder(reason)) => needs_builder(entry, reason),
            // A kept .git holds packs whose bytes depend on git's version.
            Err(err) if err.is_content_mismatch() && source.leave_dot_git => needs_builder(
                entry,
                format!("the kept .git depends on the git version that made it: {err}"),
            ),
            Err(err) if err.is_content_mismatch() => Outcome::Failed {
                reason: "hash mismatch".into(),
                detail: err.to_string(),
            },
            Err(err) => Outcome::Failed {
                reason: "git".into(),
                detail: err.to_string(),
            },
        })
    }

    /// With `--builder nix`, whatever the native paths did not publish is realised by Nix.
    /// The native outcome is kept when there is no builder.
    pub(super) async fn or_builder(
        &self,
        entry: &Entry,
        native: Outcome,
        report: &mut EntryReport,
    ) -> Result<Outcome, Error> {
        let Some(builder) = self.builder.clone() else {
            return Ok(native);
        };
        let before = match &native {
            Outcome::NeedsBuilder { reason, .. } => reason.clone(),
            Outcome::Failed { detail, .. } => detail.clone(),
            _ => return Ok(native),
        };
        let _slot = self.builder_slots.acquire().await.map_err(|_| closed())?;
        let cache = self.cache.clone();
        let task_entry = entry.clone();
        let built = blocking(move || {
            let _lock = cache.lock_item(&task_entry)?;
            builder.build(&task_entry, &cache)
        });
        match self.step(Step::Build, &entry.name, built).await {
            Ok(built) => {
                report.bytes_written = built.published.file_size;
                Ok(Outcome::Fetched {
                    how: How::Builder,
                    from: if built.removed_from_store {
                        format!("{} (removed from the store again)", built.drv_path)
                    } else {
                        built.drv_path.clone()
                    },
                })
            }
            Err(err) if err.is_fatal() => Err(err),
            Err(err) => Ok(Outcome::Failed {
                reason: "builder".into(),
                detail: format!("{before}; then {}: {err}", builder_command(entry)),
            }),
        }
    }
}
