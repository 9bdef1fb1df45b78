//! The check every agent call goes through: a signature by the agent's enrolled key over this
//! very request, a clock within the window, an active agent, an allowed source address, and a
//! nonce not seen before (so a captured request cannot be replayed inside the window).
//! Refusals are audited with the reason (up to a budget per source address: `refusals`);
//! none echoes the header.

use lockstep_agent_protocol::auth::{MAX_CLOCK_SKEW_SECS, SignedRequest, decode_public_key};

use super::networks;
use super::refusals::{Admission, RefusalBudget, refusal_detail};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::AgentStatus;
use crate::store::agents::AgentRow;
use crate::store::{self, Store};

/// The agent that signed this request, or the reason it is refused.
pub async fn authenticate(
    store: &Store,
    budget: &RefusalBudget,
    header: Option<&str>,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    source_ip: Option<&str>,
) -> Result<AgentRow> {
    let refuse = |agent: &str, why: String, err: Error| {
        let store = store.clone();
        let agent = agent.to_string();
        let ip = source_ip.map(str::to_string);
        let target = format!("{method} {path_and_query}");
        // A flood from one address is audited up to a budget, then counted.
        let admission = budget.admit(source_ip.unwrap_or("unknown"), std::time::Instant::now());
        async move {
            let Admission::Record { suppressed_before } = admission else {
                return Err::<AgentRow, Error>(err);
            };
            let detail = refusal_detail(&why, suppressed_before);
            audit::record(
                &store,
                NewEvent {
                    actor: &Actor {
                        name: if agent.is_empty() {
                            "anonymous".into()
                        } else {
                            format!("agent:{agent}")
                        },
                        source_ip: ip,
                    },
                    action: "agent.authenticate",
                    target: &target,
                    outcome: Outcome::Denied,
                    detail,
                },
            )
            .await?;
            Err::<AgentRow, Error>(err)
        }
    };
    let Some(header) = header else {
        return Err(Error::Unauthenticated(
            "no Authorization header; agent calls are signed by the agent's key",
        ));
    };
    let signed = match SignedRequest::parse(header) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                "",
                e.to_string(),
                Error::Unauthenticated("malformed agent authorization"),
            )
            .await;
        }
    };
    let Some(agent) = store::agents::get_agent(store.pool(), &signed.agent_id).await? else {
        return refuse(
            "",
            format!("unknown agent {}", signed.agent_id),
            Error::Unauthenticated("unknown agent; enroll it again"),
        )
        .await;
    };
    let key = decode_public_key(&agent.public_key)
        .ok_or_else(|| Error::Internal(format!("agent {} has a corrupt key", agent.id)))?;
    if let Err(e) = signed.verify(
        &key,
        crate::time::now_utc().timestamp(),
        method,
        path_and_query,
        body,
    ) {
        let msg = match e {
            lockstep_agent_protocol::auth::AuthError::Skew { .. } => {
                "the agent's clock is too far from the server's; synchronize it"
            }
            _ => "the request signature does not verify",
        };
        return refuse(&agent.id, e.to_string(), Error::Unauthenticated(msg)).await;
    }
    if !AgentStatus::Active.is(&agent.status) {
        return refuse(
            &agent.id,
            AgentStatus::Revoked.as_str().into(),
            Error::Unauthenticated("this agent was revoked; enroll it again with a new token"),
        )
        .await;
    }
    if !networks::allows(&agent.allowed_networks, source_ip) {
        return refuse(
            &agent.id,
            format!("address {} not allowed", source_ip.unwrap_or("unknown")),
            Error::NotAllowed(format!(
                "this agent may call only from {}; this request came from {}",
                agent.allowed_networks,
                source_ip.unwrap_or("an unknown address")
            )),
        )
        .await;
    }
    // Last, so only requests that would otherwise be served spend a nonce.
    let now = crate::time::now_utc().timestamp();
    let keep_until = signed.unix.max(now) + MAX_CLOCK_SKEW_SECS;
    let mut tx = store.begin_write().await?;
    let fresh =
        store::agents::remember_nonce(tx.conn(), &agent.id, &signed.nonce, keep_until, now).await?;
    tx.commit().await?;
    if !fresh {
        return refuse(
            &agent.id,
            "replayed request (nonce already used)".into(),
            Error::Unauthenticated(
                "this signed request was already received; an agent signs each request afresh",
            ),
        )
        .await;
    }
    Ok(agent)
}
