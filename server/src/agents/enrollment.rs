//! Enrollment: an administrator issues a one-time, expiring token; an agent spends it once to
//! register its own public key. Tokens are stored only as SHA-256.

use base64::Engine;
use lockstep_agent_protocol::messages::{EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::networks;
use super::refusals::{Admission, RefusalBudget, refusal_detail};
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::states::AgentStatus;
use crate::store::agents::{AgentRow, EnrollmentTokenRow};
use crate::store::{self, Store};

/// Every enrollment token starts with this.
pub const PREFIX: &str = "lse_";
/// Lifetime of a token when none is asked for.
pub const DEFAULT_TTL_SECS: i64 = 3600;
/// Longest lifetime of a token.
pub const MAX_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// The user that will own the agent's resource; the caller when absent.
    pub owner: Option<String>,
    /// Seconds until the token expires: 60 to 604800 (7 days); 3600 when absent.
    pub expires_in_secs: Option<i64>,
    /// Addresses or CIDR ranges the agent may call from; any when empty.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
}

/// A new token: its text is shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedEnrollmentToken {
    pub id: String,
    /// `lse_…`: give it to `lockstep-agent enroll --token-file`.
    pub token: String,
    pub owner: String,
    pub allowed_networks: Vec<String>,
    pub expires_at: String,
}

impl std::fmt::Debug for IssuedEnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedEnrollmentToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub async fn issue(
    store: &Store,
    actor: &Actor,
    caller: &str,
    input: NewEnrollmentToken,
) -> Result<IssuedEnrollmentToken> {
    let ttl = input.expires_in_secs.unwrap_or(DEFAULT_TTL_SECS);
    let mut problems = Vec::new();
    if !(60..=MAX_TTL_SECS).contains(&ttl) {
        problems.push(crate::error::FieldProblem::new(
            "expires_in_secs",
            format!("must be between 60 and {MAX_TTL_SECS} seconds"),
        ));
    }
    let owner = input.owner.unwrap_or_else(|| caller.to_string());
    if store::users::get_by_name(store.pool(), &owner)
        .await?
        .is_none()
    {
        problems.push(crate::error::FieldProblem::new(
            "owner",
            format!("there is no user '{owner}'"),
        ));
    }
    let nets = match networks::parse("allowed_networks", &input.allowed_networks) {
        Ok(n) => n,
        Err(Error::Validation(p)) => {
            problems.extend(p);
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("no randomness: {e}")))?;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let now = crate::time::now_utc();
    let allowed: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    let row = EnrollmentTokenRow {
        id: crate::time::new_id("enr"),
        token_sha256: hash(&token),
        owner: owner.clone(),
        allowed_networks: serde_json::to_string(&allowed)
            .map_err(|e| Error::Internal(e.to_string()))?,
        created_by: actor.name.clone(),
        created_at: crate::time::format(now),
        expires_at: crate::time::format(now + chrono::Duration::seconds(ttl)),
        used_at: None,
        agent_id: None,
    };
    let mut tx = store.begin_write().await?;
    store::agents::insert_token(tx.conn(), &row).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "agent.token.issue",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "owner": owner, "expires_at": row.expires_at, "allowed_networks": allowed,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedEnrollmentToken {
        id: row.id,
        token,
        owner,
        allowed_networks: allowed,
        expires_at: row.expires_at,
    })
}

/// Spends a token: registers the agent's public key. Every refusal says what to do and is
/// audited (without the token) under the per-address refusal budget that refused agent
/// requests use: an anonymous flood of enrollments is counted, not recorded one by one.
pub async fn enroll(
    store: &Store,
    budget: &RefusalBudget,
    req: EnrollRequest,
    source_ip: Option<String>,
) -> Result<EnrollResponse> {
    let refuse = |why: &'static str, err: Error| {
        let store = store.clone();
        let ip = source_ip.clone();
        let admission = budget.admit(
            source_ip.as_deref().unwrap_or("unknown"),
            std::time::Instant::now(),
        );
        async move {
            let Admission::Record { suppressed_before } = admission else {
                return Err::<EnrollResponse, Error>(err);
            };
            audit::record(
                &store,
                NewEvent {
                    actor: &Actor::anonymous(ip),
                    action: "agent.enroll",
                    target: "-",
                    outcome: Outcome::Denied,
                    detail: refusal_detail(why, suppressed_before),
                },
            )
            .await?;
            Err::<EnrollResponse, Error>(err)
        }
    };
    let token = req.token.expose();
    if !token.starts_with(PREFIX) {
        return refuse(
            "not an enrollment token",
            Error::Unauthenticated("this is not an enrollment token (lse_…)"),
        )
        .await;
    }
    let Some(key) = lockstep_agent_protocol::auth::decode_public_key(&req.public_key) else {
        return refuse(
            "bad public key",
            Error::validation("public_key", "is not a base64 ed25519 public key"),
        )
        .await;
    };
    let hostname = req.hostname.trim().to_string();
    if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(char::is_control) {
        return refuse(
            "bad hostname",
            Error::validation("hostname", "must be 1–253 printable characters"),
        )
        .await;
    }
    let now = crate::time::now();
    let mut tx = store.begin_write().await?;
    let Some(row) = store::agents::token_by_hash(tx.conn(), &hash(token)).await? else {
        drop(tx);
        return refuse(
            "unknown token",
            Error::Unauthenticated(
                "the enrollment token is unknown; ask an administrator for a new one",
            ),
        )
        .await;
    };
    if row.used_at.is_some() {
        drop(tx);
        return refuse(
            "token already used",
            Error::Unauthenticated(
                "the enrollment token was already used (tokens are single use); ask an \
                 administrator for a new one",
            ),
        )
        .await;
    }
    if row.expires_at <= now {
        drop(tx);
        return refuse(
            "token expired",
            Error::Unauthenticated(
                "the enrollment token has expired; ask an administrator for a new one",
            ),
        )
        .await;
    }
    if !networks::allows(&row.allowed_networks, source_ip.as_deref()) {
        drop(tx);
        return refuse(
            "address not allowed",
            Error::NotAllowed(format!(
                "this token may be used only from {}; this request came from {}",
                row.allowed_networks,
                source_ip.as_deref().unwrap_or("an unknown address")
            )),
        )
        .await;
    }
    let agent = AgentRow {
        id: crate::time::new_id("agt"),
        hostname,
        public_key: lockstep_agent_protocol::auth::encode_public_key(&key),
        owner: row.owner.clone(),
        allowed_networks: row.allowed_networks.clone(),
        resource_id: None,
        status: AgentStatus::Active.as_str().into(),
        version: req.version.chars().take(64).collect(),
        session: None,
        last_seen_at: None,
        last_address: source_ip.clone(),
        enrolled_at: now.clone(),
        revoked_at: None,
    };
    if !store::agents::use_token(tx.conn(), &row.id, &agent.id, &now).await? {
        drop(tx);
        return refuse(
            "token already used",
            Error::Unauthenticated("the enrollment token was already used (tokens are single use)"),
        )
        .await;
    }
    store::agents::insert_agent(tx.conn(), &agent)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Conflict("this public key is already enrolled; generate a new key".into())
            } else {
                e.into()
            }
        })?;
    audit::append(
        &mut tx,
        NewEvent {
            actor: &super::actor(&agent, source_ip),
            action: "agent.enroll",
            target: &agent.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "token": row.id, "hostname": agent.hostname, "owner": agent.owner,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(EnrollResponse {
        agent_id: agent.id,
        owner: agent.owner,
    })
}
