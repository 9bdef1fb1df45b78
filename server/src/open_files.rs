//! The server's open-file limit. Listener runs hold file descriptors (sockets, HTTP
//! connections, a program's pipes), and so do agents, targets and the database pool: at start,
//! `lockstep serve` raises its soft limit toward the hard one, so Linux's default soft limit
//! of 1,024 does not make the host's own next `exec` or `accept` fail with "too many open
//! files" (issue 16). The hard limit is the operator's: `LimitNOFILE=` in the service unit
//! (`server/lockstep.service` sets 65,536), or `ulimit -Hn`.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft limit aimed for: enough for [`lockstep_runtime::limits::OPEN_FILES_NEEDED`] with
/// room for load, and never more than the hard limit allows.
pub const WANTED: u64 = 65_536;

/// What the start did to the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: Option<u64>,
}

impl OpenFiles {
    /// Whether the limit now covers what 64 listener runs at once and the server may hold.
    pub fn enough(&self) -> bool {
        self.now >= lockstep_runtime::limits::OPEN_FILES_NEEDED
    }
}

/// The soft limit to set, given the current soft and hard limits (`None`: unlimited), or
/// `None` when the current one is already high enough (a limit is never lowered).
pub fn target(soft: u64, hard: Option<u64>) -> Option<u64> {
    let goal = hard.map_or(WANTED, |h| h.min(WANTED));
    (goal > soft).then_some(goal)
}

/// Raises the soft open-file limit toward [`WANTED`], within the hard limit.
pub fn raise() -> std::io::Result<OpenFiles> {
    let limit = getrlimit(Resource::Nofile);
    // `None` means unlimited; an unlimited soft limit needs nothing.
    let before = limit.current.unwrap_or(u64::MAX);
    let Some(now) = target(before, limit.maximum) else {
        return Ok(OpenFiles {
            before,
            now: before,
            hard: limit.maximum,
        });
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(now),
            maximum: limit.maximum,
        },
    )?;
    Ok(OpenFiles {
        before,
        now,
        hard: limit.maximum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_within_the_hard_one_and_never_lowered() {
        assert_eq!(target(1024, Some(524_288)), Some(WANTED));
        assert_eq!(target(1024, Some(4096)), Some(4096));
        assert_eq!(target(1024, None), Some(WANTED));
        assert_eq!(target(1024, Some(1024)), None, "nothing to raise to");
        assert_eq!(target(100_000, Some(524_288)), None, "never lowered");
    }

    /// The unit we ship gives the server the hard limit it aims for, which covers what it needs.
    #[test]
    fn the_service_unit_sets_a_hard_limit_that_covers_the_runs() {
        let unit = include_str!("../lockstep.service");
        let set: Vec<u64> = unit
            .lines()
            .filter_map(|l| l.strip_prefix("LimitNOFILE="))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(
            set,
            [WANTED],
            "server/lockstep.service sets LimitNOFILE once"
        );
        const { assert!(WANTED >= lockstep_runtime::limits::OPEN_FILES_NEEDED) };
    }

    #[test]
    fn raise_lifts_a_default_soft_limit() {
        let was = getrlimit(Resource::Nofile);
        let hard = was.maximum.unwrap_or(u64::MAX);
        if hard <= 1024 {
            eprintln!("skipped: the hard open-file limit here is {hard}, nothing to raise to");
            return;
        }
        // Linux's default soft limit, as a process started without LimitNOFILE gets it.
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(1024),
                maximum: was.maximum,
            },
        )
        .unwrap();
        let got = raise().unwrap();
        let now = getrlimit(Resource::Nofile).current;
        // Put back what the test process had (the raise may have gone above it).
        setrlimit(Resource::Nofile, was).unwrap();
        assert_eq!(got.before, 1024);
        assert_eq!(now, Some(hard.min(WANTED)));
        assert_eq!(got.now, hard.min(WANTED));
        assert_eq!(
            got.enough(),
            hard.min(WANTED) >= lockstep_runtime::limits::OPEN_FILES_NEEDED
        );
    }
}
