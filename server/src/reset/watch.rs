//! Following a reset job: successive snapshots of a job turned into the changes between them,
//! for `GET /v1/reset-jobs/{id}/events`. The database stays the source of truth (a job may be
//! worked on by another server sharing it), so a watcher re-reads the job and reports only
//! what changed: each account whose state moved, the counts, and the end.

use std::collections::HashMap;

use serde::Serialize;

use super::jobs::{Job, Progress};
use crate::states::JobStatus;

/// One account's new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ItemChange {
    pub item_id: String,
    pub account_id: String,
    /// The state it moved to (the same names as a job item's `state`).
    pub state: String,
    pub attempts: i64,
    /// Why it stopped, or how its post-listeners went.
    pub detail: Option<String>,
}

/// The job's counts after a change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProgressChange {
    pub job_id: String,
    /// `running` or `finished`.
    pub status: String,
    pub progress: Progress,
}

/// What a watcher reports, in this order for one snapshot: items, then counts, then the end.
#[derive(Debug)]
pub enum JobChange {
    Item(ItemChange),
    Progress(ProgressChange),
    /// The job finished; carries the whole job, as `GET /v1/reset-jobs/{id}` shows it.
    Finished(Box<Job>),
}

impl JobChange {
    /// The event name a stream gives this change.
    pub fn name(&self) -> &'static str {
        match self {
            JobChange::Item(_) => "item",
            JobChange::Progress(_) => "progress",
            JobChange::Finished(_) => "finished",
        }
    }
}

/// What a watcher has already reported.
#[derive(Debug, Default)]
pub struct Seen {
    /// Item id → (state, attempts) last reported.
    items: HashMap<String, (String, i64)>,
    /// The status and counts last reported.
    progress: Option<(String, Progress)>,
    finished: bool,
}

impl Seen {
    /// True once the end was reported: nothing follows it.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The changes from what was last reported to `job`. The first snapshot reports every
    /// item and the counts, so a client that connects late still sees the whole state.
    pub fn changes(&mut self, job: Job) -> Vec<JobChange> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        for item in &job.items {
            let now = (item.state.clone(), item.attempts);
            if self.items.get(&item.id) != Some(&now) {
                self.items.insert(item.id.clone(), now);
                out.push(JobChange::Item(ItemChange {
                    item_id: item.id.clone(),
                    account_id: item.account_id.clone(),
                    state: item.state.clone(),
                    attempts: item.attempts,
                    detail: item.detail.clone(),
                }));
            }
        }
        let progress = (job.status.clone(), job.progress.clone());
        if self.progress.as_ref() != Some(&progress) {
            self.progress = Some(progress);
            out.push(JobChange::Progress(ProgressChange {
                job_id: job.id.clone(),
                status: job.status.clone(),
                progress: job.progress.clone(),
            }));
        }
        if JobStatus::Finished.is(&job.status) {
            self.finished = true;
            out.push(JobChange::Finished(Box::new(job)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reset::jobs::Item;

    fn item(id: &str, state: &str, attempts: i64) -> Item {
        Item {
            id: id.into(),
            account_id: format!("acct-{id}"),
            state: state.into(),
            attempts,
            detail: None,
            listeners: serde_json::Value::Array(vec![]),
            updated_at: "now".into(),
            claims: 1,
            steps: Vec::new(),
        }
    }

    fn job(status: &str, items: Vec<Item>) -> Job {
        let progress = Progress {
            total: items.len(),
            in_progress: items.iter().filter(|i| i.state != "done").count(),
            succeeded: items.iter().filter(|i| i.state == "done").count(),
            ..Progress::default()
        };
        Job {
            id: "job1".into(),
            kind: "bulk".into(),
            trigger: "bulk".into(),
            status: status.into(),
            requested_by: "alice".into(),
            reason: "test".into(),
            apply_remote: true,
            created_at: "now".into(),
            finished_at: None,
            progress,
            items,
        }
    }

    fn names(changes: &[JobChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                JobChange::Item(i) => format!("item {} {}", i.item_id, i.state),
                other => other.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn the_first_snapshot_reports_everything_then_only_what_moved() {
        let mut seen = Seen::default();
        let first = seen.changes(job(
            "running",
            vec![item("a", "planned", 0), item("b", "planned", 0)],
        ));
        assert_eq!(
            names(&first),
            ["item a planned", "item b planned", "progress"]
        );
        let same = seen.changes(job(
            "running",
            vec![item("a", "planned", 0), item("b", "planned", 0)],
        ));
        assert!(same.is_empty(), "nothing moved: {:?}", names(&same));
        let moved = seen.changes(job(
            "running",
            vec![item("a", "done", 1), item("b", "planned", 0)],
        ));
        assert_eq!(names(&moved), ["item a done", "progress"]);
        // A retry of the same state is a change too (attempts moved).
        let retried = seen.changes(job(
            "running",
            vec![item("a", "done", 1), item("b", "planned", 1)],
        ));
        assert_eq!(names(&retried), ["item b planned"]);
    }

    #[test]
    fn the_end_is_reported_once_with_the_whole_job() {
        let mut seen = Seen::default();
        let end = seen.changes(job("finished", vec![item("a", "done", 1)]));
        assert_eq!(names(&end), ["item a done", "progress", "finished"]);
        assert!(seen.finished());
        match end.last() {
            Some(JobChange::Finished(j)) => assert_eq!(j.items.len(), 1),
            other => panic!("expected the job, got {other:?}"),
        }
        assert!(
            seen.changes(job("finished", vec![item("a", "done", 1)]))
                .is_empty()
        );
    }
}
