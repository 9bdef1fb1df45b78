//! Every state and status the server stores as text, one enum each: the only place their
//! names are spelled (the tidy test refuses the names as string literals anywhere else outside
//! `store/`'s SQL). Rows keep the text; domain code compares and writes through these.

/// An enum whose variants are stored as fixed names: `as_str`, `parse` and `ALL`.
macro_rules! stored_names {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name as stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The variant stored as `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }

            /// Whether `text` names this variant.
            pub fn is(self, text: &str) -> bool {
                self.as_str() == text
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_names! {
    /// Where a change request is.
    pub enum ChangeStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Withdrawn = "withdrawn",
    }
}

stored_names! {
    /// Where a listener is: waiting for its first approval, approved, or gone.
    pub enum ListenerStatus {
        Pending = "pending",
        Active = "active",
        Rejected = "rejected",
        Deleted = "deleted",
    }
}

stored_names! {
    /// Whether the server trusts a publisher key.
    pub enum KeyStatus {
        Pending = "pending",
        Trusted = "trusted",
        Removed = "removed",
        Rejected = "rejected",
    }
}

stored_names! {
    /// Whether an enrolled agent may call.
    pub enum AgentStatus {
        Active = "active",
        Revoked = "revoked",
    }
}

stored_names! {
    /// Where an agent task is. The final ones after `Running` are the agent's outcomes
    /// (`lockstep_agent_protocol::messages::Outcome`) and the server's own ends.
    pub enum TaskState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Refused = "refused",
        Failed = "failed",
        Unconfirmed = "unconfirmed",
        /// Nobody took it in time; nothing changed.
        Cancelled = "cancelled",
        /// Taken, then no report in time (or handed out too often).
        Lost = "lost",
    }
}

impl TaskState {
    /// Whether nothing more happens to a task in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }
}

stored_names! {
    /// Whether the vault and the target agree on an account's password.
    pub enum SyncStatus {
        InSync = "in-sync",
        OutOfSync = "out-of-sync",
        NotVerified = "not-verified",
    }
}

stored_names! {
    /// Where a reset job is.
    pub enum JobStatus {
        Running = "running",
        Finished = "finished",
    }
}

stored_names! {
    /// Where one account's reset is in the journaled pipeline (`reset::pipeline`).
    pub enum ItemState {
        Planned = "planned",
        PreListeners = "pre-listeners",
        PendingWritten = "pending-written",
        Applied = "applied",
        Verified = "verified",
        Committed = "committed",
        PostListeners = "post-listeners",
        Done = "done",
        Vetoed = "vetoed",
        Failed = "failed",
        OutOfSync = "out-of-sync",
        Parked = "parked",
    }
}

impl ItemState {
    /// Whether an item in this state is over (nothing more happens to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Done
                | ItemState::Vetoed
                | ItemState::Failed
                | ItemState::OutOfSync
                | ItemState::Parked
        )
    }
}

stored_names! {
    /// Where a checkout is (`access::checkout`): asked for, answered, held for its window, and
    /// returned. `Rejected`, `Lapsed`, `Withdrawn` and `CheckedIn` are final.
    pub enum CheckoutState {
        Requested = "requested",
        Rejected = "rejected",
        /// Nobody answered before the request's deadline.
        Lapsed = "lapsed",
        /// Its requester took it back before it was answered.
        Withdrawn = "withdrawn",
        CheckedOut = "checked-out",
        CheckedIn = "checked-in",
    }
}

stored_names! {
    /// How a checkout came back.
    pub enum CheckinKind {
        /// Its holder returned it.
        Holder = "holder",
        /// An administrator took it back.
        Forced = "forced",
        /// Its window ended.
        Expired = "expired",
    }
}

stored_names! {
    /// Where a post-reset delivery is (`reset::delivery`). All but `Pending` are final, except
    /// that a person may re-run a dead letter.
    pub enum DeliveryState {
        /// Waiting for its next attempt (or running one, under a lease).
        Pending = "pending",
        Delivered = "delivered",
        /// The listener answered `failure`, could not run, or used up its attempts or its
        /// age: it waits for a person.
        DeadLetter = "dead-letter",
        /// A later reset of the same account committed: its news replaces this one's.
        Superseded = "superseded",
    }
}

/// Every stored name of every enum here, for the tidy test.
pub fn all_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    names.extend(ChangeStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(ListenerStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(KeyStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(AgentStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(TaskState::ALL.iter().map(|v| v.as_str()));
    names.extend(JobStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(SyncStatus::ALL.iter().map(|v| v.as_str()));
    names.extend(ItemState::ALL.iter().map(|v| v.as_str()));
    names.extend(CheckoutState::ALL.iter().map(|v| v.as_str()));
    names.extend(CheckinKind::ALL.iter().map(|v| v.as_str()));
    names.extend(DeliveryState::ALL.iter().map(|v| v.as_str()));
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ItemState::ALL {
            assert_eq!(ItemState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(TaskState::parse("nope"), None);
        assert!(TaskState::Lost.is_final() && !TaskState::Running.is_final());
    }
}
