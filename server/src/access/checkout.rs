//! The checkout workflow, one transition per function, each conditional on the state it leaves
//! and audited (`access.checkout.*`):
//!
//! ```text
//! requested ──approve (N of the approvers)──► checked-out ──check-in (holder, admin, window end)──► checked-in ──► rotation (trigger check-in)
//!     ├──reject──► rejected
//!     ├──withdraw (requester)──► withdrawn
//!     └──nobody answers in time──► lapsed
//! ```
//!
//! A policy with no approvals needed grants at once. Three seals keep a database writer without
//! the master key out: the request's terms (window asked for, approvers, approvals needed,
//! exclusivity, rotation) are sealed when it is made, the approvals counted so far at each
//! approval, and a grant over what it grants (checkout, account, holder, window, exclusivity,
//! rotation). A row whose seal fails is refused (an approval of it, or a retrieval under it);
//! a checkout whose grant seal fails is rotated when it ends whatever its row says. An approval counts only from a
//! named approver who is not the requester and whose custody is independent of the
//! requester's (`identity::custody`), as for listener changes.

use serde::{Deserialize, Serialize};

use super::policy;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::inventory::accounts::{self, RetrieveRequest, RetrievedPassword};
use crate::registry::Registry;
use crate::states::{CheckinKind, CheckoutState, ItemState};
use crate::store::checkouts::{CheckoutFilter, CheckoutRow, Grant};
use crate::store::{self, Page, PageRequest, Store};
use crate::vault::Vault;

/// `POST /v1/accounts/{id}/checkouts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// Why (3–500 characters; audited and shown to the approvers).
    pub reason: String,
    /// How long the window should be, in minutes; absent: the policy's maximum.
    pub minutes: Option<i64>,
}

/// An approval counted on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    pub user: String,
    pub at: String,
}

/// The rotation a return started, and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rotation {
    pub job_id: String,
    /// The account's reset item state (`done` when the password the holder saw is gone).
    pub state: String,
}

/// A checkout as the API shows it (never a password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checkout {
    pub id: String,
    pub account_id: String,
    pub requester: String,
    pub reason: String,
    pub minutes: i64,
    /// `requested`, `checked-out`, then `checked-in`; or `rejected`, `lapsed`, `withdrawn`.
    pub state: String,
    pub approvers: Vec<String>,
    pub approvals_needed: i64,
    pub approvals: Vec<Approval>,
    pub exclusive: bool,
    pub rotate_on_checkin: bool,
    pub requested_at: String,
    /// A request still unanswered then lapses.
    pub answer_by: String,
    /// Who rejected it, or gave the approval that granted it.
    pub answered_by: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    /// `holder`, `forced` or `expired`.
    pub end_kind: Option<String>,
    pub rotation: Option<Rotation>,
}

fn approvals_of(json: &str) -> Vec<Approval> {
    serde_json::from_str(json).unwrap_or_default()
}

fn view(r: CheckoutRow, rotation: Option<Rotation>) -> Checkout {
    Checkout {
        approvals: approvals_of(&r.approvals),
        approvers: policy::names(&r.approvers),
        id: r.id,
        account_id: r.account_id,
        requester: r.requester,
        reason: r.reason,
        minutes: r.minutes,
        state: r.state,
        approvals_needed: r.approvals_needed,
        exclusive: r.exclusive != 0,
        rotate_on_checkin: r.rotate_on_checkin != 0,
        requested_at: r.requested_at,
        answer_by: r.answer_by,
        answered_by: r.answered_by,
        starts_at: r.starts_at,
        ends_at: r.ends_at,
        ended_at: r.ended_at,
        ended_by: r.ended_by,
        end_kind: r.end_kind,
        rotation,
    }
}

/// `at` plus `minutes`, in the stored form; `None` past what a timestamp holds.
fn after_minutes(at: chrono::DateTime<chrono::Utc>, minutes: i64) -> Option<String> {
    chrono::Duration::try_minutes(minutes)
        .and_then(|d| at.checked_add_signed(d))
        .map(crate::time::format)
}

fn too_far(minutes: i64) -> Error {
    Error::validation(
        "minutes",
        format!("{minutes} minutes from now is past any date"),
    )
}

/// What a request's seal binds: who asked for which account, and every term it was asked
/// under (copied from the policy then).
fn request_binding(r: &CheckoutRow) -> String {
    format!(
        "checkout-request\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        r.id,
        r.account_id,
        r.requester,
        r.minutes,
        r.approvers,
        r.approvals_needed,
        r.exclusive,
        r.rotate_on_checkin,
        r.requested_at,
        r.answer_by
    )
}

/// What an approvals seal binds: the approvals counted on this checkout so far.
fn approvals_binding(id: &str, approvals: &str) -> String {
    format!("checkout-approvals\n{id}\n{approvals}")
}

/// What a grant's seal binds: the checkout, its account and holder, its window, whether it is
/// exclusive and whether its return rotates the password.
fn grant_binding(r: &CheckoutRow, starts_at: &str, ends_at: &str) -> String {
    format!(
        "checkout-grant\n{}\n{}\n{}\n{starts_at}\n{ends_at}\n{}\n{}",
        r.id, r.account_id, r.requester, r.exclusive, r.rotate_on_checkin
    )
}

/// Why a request's row is not the one sealed, if it is not.
fn request_tampered(vault: &Vault, r: &CheckoutRow) -> Option<String> {
    if !vault.check_attestation(&request_binding(r), &r.request_seal) {
        return Some(format!(
            "checkout '{}''s request is not the one sealed when it was made (edited in the \
             database?); its requester must ask again",
            r.id
        ));
    }
    if !vault.check_attestation(&approvals_binding(&r.id, &r.approvals), &r.approvals_seal) {
        return Some(format!(
            "checkout '{}''s approvals are not the ones sealed as they were given (edited in \
             the database?); its requester must ask again",
            r.id
        ));
    }
    None
}

/// Whether a held checkout's grant is the one the vault sealed.
fn grant_holds(vault: &Vault, r: &CheckoutRow) -> bool {
    match (&r.starts_at, &r.ends_at, &r.grant_seal) {
        (Some(s), Some(e), Some(seal)) => vault.check_attestation(&grant_binding(r, s, e), seal),
        _ => false,
    }
}

/// What an approval does to a request: counted, or counted and granting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ApprovalStep {
    Counted(Vec<Approval>),
    Grants(Vec<Approval>),
}

/// Decides an approval by `approver` at `now` (pure; custody is checked by the caller).
pub(crate) fn decide_approval(r: &CheckoutRow, approver: &str, now: &str) -> Result<ApprovalStep> {
    if !CheckoutState::Requested.is(&r.state) {
        return Err(Error::Conflict(format!(
            "checkout '{}' is {}, not waiting for an answer",
            r.id, r.state
        )));
    }
    if r.answer_by.as_str() <= now {
        return Err(Error::Conflict(format!(
            "checkout '{}' was to be answered by {}; it lapses, and its requester must ask again",
            r.id, r.answer_by
        )));
    }
    if approver == r.requester {
        return Err(Error::NotAllowed(format!(
            "{approver} requested checkout '{}' and cannot approve it; one of its approvers must",
            r.id
        )));
    }
    if !policy::names(&r.approvers).iter().any(|a| a == approver) {
        return Err(Error::NotAllowed(format!(
            "{approver} is not an approver of checkout '{}' (its approvers: {})",
            r.id,
            policy::names(&r.approvers).join(", ")
        )));
    }
    let mut approvals = approvals_of(&r.approvals);
    if approvals.iter().any(|a| a.user == approver) {
        return Err(Error::Conflict(format!(
            "{approver} already approved checkout '{}'; it needs {} different approvers",
            r.id, r.approvals_needed
        )));
    }
    approvals.push(Approval {
        user: approver.to_string(),
        at: now.to_string(),
    });
    if approvals.len() as i64 >= r.approvals_needed {
        Ok(ApprovalStep::Grants(approvals))
    } else {
        Ok(ApprovalStep::Counted(approvals))
    }
}

/// How a retrieval stands against an account's held checkouts (pure).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// The caller holds this checkout, its window is open and its grant sealed.
    Holds(String),
    /// Someone else holds it exclusively until then.
    HeldBy { holder: String, until: String },
    /// The caller must check it out first.
    NeedsCheckout,
}

/// Decides a retrieval by `user` at `now` among the account's held checkouts, given which of
/// them carry a sealed grant.
pub(crate) fn decide_gate(held: &[(CheckoutRow, bool)], user: &str, now: &str) -> Gate {
    let open = |r: &CheckoutRow| r.ends_at.as_deref().is_some_and(|e| e > now);
    // Another's exclusive hold comes first: a shared holder does not read during it.
    if let Some((r, _)) = held
        .iter()
        .find(|(r, sealed)| *sealed && r.exclusive != 0 && r.requester != user && open(r))
    {
        return Gate::HeldBy {
            holder: r.requester.clone(),
            until: r.ends_at.clone().unwrap_or_default(),
        };
    }
    if let Some((r, _)) = held
        .iter()
        .find(|(r, sealed)| *sealed && r.requester == user && open(r))
    {
        return Gate::Holds(r.id.clone());
    }
    Gate::NeedsCheckout
}

/// `POST /v1/accounts/{id}/password/retrieve`: the account's password for `user`, through the
/// gate. Under an access policy only the holder of an open checkout gets it, and its audit
/// event names the checkout; a refusal is audited too.
pub async fn retrieve(
    store: &Store,
    registry: &Registry,
    actor: &Actor,
    user: &str,
    account_id: &str,
    request: RetrieveRequest,
) -> Result<RetrievedPassword> {
    let vault = registry.vault();
    let checkout = match gate(store, registry, user, account_id).await {
        Ok(checkout) => checkout,
        Err(e @ (Error::NotAllowed(_) | Error::Conflict(_))) => {
            audit::record(
                store,
                NewEvent {
                    actor,
                    action: "account.password.retrieve",
                    target: account_id,
                    outcome: Outcome::Denied,
                    detail: serde_json::json!({ "why": e.to_string() }),
                },
            )
            .await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    accounts::retrieve_password(
        store,
        vault,
        actor,
        account_id,
        checkout.as_deref(),
        request,
    )
    .await
}

/// Whether `user` may retrieve the account's password now, and under which checkout:
/// `Ok(None)` when no access policy applies, `Ok(Some(id))` for the holder of an open window.
pub async fn gate(
    store: &Store,
    registry: &Registry,
    user: &str,
    account_id: &str,
) -> Result<Option<String>> {
    let vault = registry.vault();
    let Some(policy) = policy::effective(store, registry, account_id).await? else {
        return Ok(None);
    };
    let held = held_checkouts(store, account_id).await?;
    let checked: Vec<(CheckoutRow, bool)> = held
        .into_iter()
        .map(|r| {
            let sealed = grant_holds(vault, &r);
            if !sealed {
                tracing::warn!(checkout = %r.id, "a held checkout's grant fails its seal (edited in the database?); it grants nothing");
            }
            (r, sealed)
        })
        .collect();
    match decide_gate(&checked, user, &crate::time::now()) {
        Gate::Holds(id) => Ok(Some(id)),
        Gate::HeldBy { holder, until } => Err(Error::Conflict(format!(
            "account '{account_id}' is checked out by {holder} until {until}; it can be \
             retrieved again after its check-in and rotation"
        ))),
        Gate::NeedsCheckout => Err(Error::NotAllowed(format!(
            "account '{account_id}' is under access control ({} policy '{}'): request a \
             checkout with POST /v1/accounts/{account_id}/checkouts, then retrieve it while \
             you hold it",
            policy.scope.as_str(),
            policy.scope_id
        ))),
    }
}

async fn held_checkouts(store: &Store, account_id: &str) -> Result<Vec<CheckoutRow>> {
    store::checkouts::of_account_in(store.pool(), account_id, CheckoutState::CheckedOut.as_str())
        .await
}

/// Why the account's password may not be handed out again yet: the last returned checkout's
/// rotation has not made the password its holder saw obsolete.
async fn unrotated_return(store: &Store, account_id: &str) -> Result<Option<String>> {
    let Some(last) = store::checkouts::last_returned(
        store.pool(),
        account_id,
        CheckoutState::CheckedIn.as_str(),
    )
    .await?
    else {
        return Ok(None);
    };
    let rotation = rotation_of(store, &last).await?;
    let (how, done) = match &rotation {
        None => ("its rotation has not started yet".to_string(), false),
        Some(r) if ItemState::Done.is(&r.state) => (String::new(), true),
        Some(r) => (
            format!("its rotation (job {}) is {}", r.job_id, r.state),
            false,
        ),
    };
    if done {
        return Ok(None);
    }
    let since = last.ended_at.clone().unwrap_or_default();
    if rotation
        .as_ref()
        .is_some_and(|r| ItemState::parse(&r.state).is_some_and(ItemState::is_final))
        && store::resets::done_since(store.pool(), account_id, &since).await?
    {
        // A later reset replaced the password.
        return Ok(None);
    }
    Ok(Some(format!(
        "account '{account_id}''s password was held by {} in checkout '{}' and {how}; reset it \
         (POST /v1/accounts/{account_id}/reset) before it is checked out again",
        last.requester, last.id
    )))
}

async fn rotation_of(store: &Store, r: &CheckoutRow) -> Result<Option<Rotation>> {
    let Some(job) = &r.reset_job_id else {
        return Ok(None);
    };
    let items = store::resets::items_of(store.pool(), job).await?;
    Ok(Some(Rotation {
        job_id: job.clone(),
        state: items
            .into_iter()
            .next()
            .map(|i| i.state)
            .unwrap_or_default(),
    }))
}

async fn row(store: &Store, id: &str) -> Result<CheckoutRow> {
    store::checkouts::get(store.pool(), id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "checkout",
            id: id.to_string(),
        })
}

pub async fn get(store: &Store, id: &str) -> Result<Checkout> {
    let r = row(store, id).await?;
    let rotation = rotation_of(store, &r).await?;
    Ok(view(r, rotation))
}

/// `GET /v1/checkouts` filters.
#[derive(Debug, Default)]
pub struct CheckoutQuery {
    pub account_id: Option<String>,
    pub requester: Option<String>,
    /// `requested`, `checked-out`, `checked-in`, `rejected`, `lapsed` or `withdrawn`.
    pub state: Option<String>,
}

pub async fn list(store: &Store, q: CheckoutQuery, page: &PageRequest) -> Result<Page<Checkout>> {
    if let Some(s) = &q.state
        && CheckoutState::parse(s).is_none()
    {
        return Err(Error::validation(
            "state",
            format!(
                "'{s}' is not a checkout state; use one of: {}",
                CheckoutState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let filter = CheckoutFilter {
        account_id: q.account_id.filter(|s| !s.is_empty()),
        requester: q.requester.filter(|s| !s.is_empty()),
        state: q.state.filter(|s| !s.is_empty()),
    };
    let rows = store::checkouts::list(store.pool(), &filter, page).await?;
    // Rotations are read for returned checkouts only (one small read each).
    let mut items = Vec::with_capacity(rows.items.len());
    for r in rows.items {
        let rotation = rotation_of(store, &r).await?;
        items.push(view(r, rotation));
    }
    Ok(Page {
        items,
        next_after: rows.next_after,
    })
}

/// Asks for a checkout of an account (audited `access.checkout.request`; the approvers are
/// notified). With no approval needed it is granted at once.
pub async fn request(
    store: &Store,
    registry: &Registry,
    actor: &Actor,
    user: &str,
    account_id: &str,
    input: CheckoutRequest,
) -> Result<Checkout> {
    let vault = registry.vault();
    let reason = crate::reset::jobs::check_reason(&input.reason)?;
    let Some(policy) = policy::effective(store, registry, account_id).await? else {
        return Err(Error::Conflict(format!(
            "account '{account_id}' is not under access control; retrieve it with POST \
             /v1/accounts/{account_id}/password/retrieve, or set a policy with PUT \
             /v1/access-policies/account/{account_id}"
        )));
    };
    if !policy.requesters.is_empty() && !policy.requesters.iter().any(|r| r == user) {
        return Err(Error::NotAllowed(format!(
            "{user} may not request account '{account_id}': its {} policy '{}' names the \
             requesters {}",
            policy.scope.as_str(),
            policy.scope_id,
            policy.requesters.join(", ")
        )));
    }
    let minutes = input.minutes.unwrap_or(policy.max_minutes);
    if !(1..=policy.max_minutes).contains(&minutes) {
        return Err(Error::validation(
            "minutes",
            format!(
                "give 1 to {} minutes (the policy's longest window)",
                policy.max_minutes
            ),
        ));
    }
    let now_t = crate::time::now_utc();
    let now = crate::time::format(now_t);
    let answer_by = after_minutes(now_t, policy.answer_minutes)
        .ok_or_else(|| too_far(policy.answer_minutes))?;
    let mut r = CheckoutRow {
        id: crate::time::new_id("cko"),
        account_id: account_id.to_string(),
        requester: user.to_string(),
        reason: reason.clone(),
        minutes,
        state: CheckoutState::Requested.as_str().into(),
        approvers: serde_json::to_string(&policy.approvers).unwrap_or_default(),
        approvals_needed: policy.approvals_needed,
        approvals: "[]".into(),
        request_seal: String::new(),
        approvals_seal: String::new(),
        exclusive: policy.exclusive.into(),
        rotate_on_checkin: policy.rotate_on_checkin.into(),
        requested_at: now.clone(),
        answer_by,
        answered_by: None,
        starts_at: None,
        ends_at: None,
        grant_seal: None,
        ended_at: None,
        ended_by: None,
        end_kind: None,
        reset_job_id: None,
        updated_at: now.clone(),
    };
    r.request_seal = vault.attest(&request_binding(&r))?;
    r.approvals_seal = vault.attest(&approvals_binding(&r.id, &r.approvals))?;
    // No approval needed, or asked inside one of the policy's auto-approval windows.
    let auto = (policy.approvals_needed > 0)
        .then(|| policy.auto_approves(now_t).cloned())
        .flatten();
    let granted = policy.approvals_needed == 0 || auto.is_some();
    if granted {
        let ends = after_minutes(now_t, minutes).ok_or_else(|| too_far(minutes))?;
        r.grant_seal = Some(vault.attest(&grant_binding(&r, &now, &ends))?);
        r.state = CheckoutState::CheckedOut.as_str().into();
        r.starts_at = Some(now.clone());
        r.ends_at = Some(ends);
    }
    // Under the write lock: no other grant of this account commits between the check and ours
    // (on one node; across PostgreSQL nodes `checkouts_one_holder` refuses a second exclusive).
    let mut tx = store.begin_write().await?;
    if let Some(why) = unrotated_return(store, account_id).await? {
        return Err(Error::Conflict(why));
    }
    busy(store, vault, policy.exclusive, user, account_id, None).await?;
    if let Err(e) = store::checkouts::insert(tx.conn(), &r).await {
        drop(tx);
        return Err(held_elsewhere(store, account_id, e).await);
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.checkout.request",
            target: account_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "checkout": r.id, "reason": reason, "minutes": minutes,
                "policy": format!("{}/{}", policy.scope.as_str(), policy.scope_id),
                "auto_approved": auto,
            }),
        },
    )
    .await?;
    if granted {
        audit::append(&mut tx, started_event(actor, &r)).await?;
    } else {
        for a in &policy.approvers {
            crate::notifications::notify(
                &mut tx,
                a,
                "checkout-request",
                format!(
                    "{user} asks to check out account {account_id} for {minutes} minutes \
                     ({reason}); approve or reject checkout {} by {}",
                    r.id, r.answer_by
                ),
                None,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(view(r, None))
}

/// Refuses a request or grant the account's current holders rule out: another's open hold
/// when either it or this one is exclusive, or the caller's own open request or checkout
/// (`except`: the checkout being granted, which is not a duplicate of itself).
async fn busy(
    store: &Store,
    vault: &Vault,
    exclusive: bool,
    user: &str,
    account_id: &str,
    except: Option<&str>,
) -> Result<()> {
    let now = crate::time::now();
    for r in held_checkouts(store, account_id).await? {
        let open = r.ends_at.as_deref().is_some_and(|e| e > now.as_str());
        if open && (r.exclusive != 0 || exclusive) && grant_holds(vault, &r) && r.requester != user
        {
            return Err(held_by(account_id, &r));
        }
        if r.requester == user && open {
            return Err(Error::Conflict(format!(
                "{user} already holds account '{account_id}' (checkout '{}')",
                r.id
            )));
        }
    }
    let waiting = store::checkouts::of_account_in(
        store.pool(),
        account_id,
        CheckoutState::Requested.as_str(),
    )
    .await?;
    if let Some(r) = waiting
        .iter()
        .find(|r| r.requester == user && Some(r.id.as_str()) != except)
    {
        return Err(Error::Conflict(format!(
            "{user} already asked for account '{account_id}' (checkout '{}', waiting for approval)",
            r.id
        )));
    }
    Ok(())
}

/// The refusal naming who holds the account, and until when.
fn held_by(account_id: &str, r: &CheckoutRow) -> Error {
    Error::Conflict(format!(
        "account '{account_id}' is checked out by {} until {}",
        r.requester,
        r.ends_at.as_deref().unwrap_or_default()
    ))
}

/// A grant refused by `checkouts_one_holder`: someone else became the holder meanwhile.
async fn held_elsewhere(store: &Store, account_id: &str, e: store::Error) -> Error {
    if !store::is_unique_violation(&e) {
        return e.into();
    }
    match held_checkouts(store, account_id).await {
        Ok(held) => match held.into_iter().find(|r| r.exclusive != 0) {
            Some(r) => held_by(account_id, &r),
            None => Error::Conflict(format!(
                "account '{account_id}' was checked out by someone else just now; try again"
            )),
        },
        Err(e) => e,
    }
}

fn started_event<'a>(actor: &'a Actor, r: &'a CheckoutRow) -> NewEvent<'a> {
    NewEvent {
        actor,
        action: "access.checkout.start",
        target: &r.account_id,
        outcome: Outcome::Success,
        detail: serde_json::json!({
            "checkout": r.id, "held_by": r.requester, "starts_at": r.starts_at,
            "ends_at": r.ends_at, "exclusive": r.exclusive != 0,
        }),
    }
}

/// Approves a request as `approver` (audited `access.checkout.approve`); the approval that
/// completes the count grants the window (audited `access.checkout.start`; the requester is
/// notified).
pub async fn approve(
    store: &Store,
    vault: &Vault,
    registry: &Registry,
    actor: &Actor,
    approver: &str,
    id: &str,
) -> Result<Checkout> {
    let mut r = row(store, id).await?;
    let now_t = crate::time::now_utc();
    let now = crate::time::format(now_t);
    let step = match decide_approval(&r, approver, &now) {
        Ok(step) => step,
        Err(e) => {
            refused(store, actor, &r, "access.checkout.approve", &e).await?;
            return Err(e);
        }
    };
    if let Some(why) = request_tampered(vault, &r) {
        tracing::error!(checkout = %r.id, reason = %why, "ALERT: a checkout request fails its seal");
        let e = Error::NotAllowed(why);
        refused(store, actor, &r, "access.checkout.approve", &e).await?;
        return Err(e);
    }
    if let Some(why) = crate::identity::custody::refuses_approval(
        store,
        registry,
        approver,
        &r.requester,
        &r.requested_at,
    )
    .await?
    {
        let e = Error::NotAllowed(why);
        refused(store, actor, &r, "access.checkout.approve", &e).await?;
        return Err(e);
    }
    let seen = r.approvals.clone();
    let mut tx = store.begin_write().await?;
    match step {
        ApprovalStep::Counted(approvals) => {
            let json = serde_json::to_string(&approvals).unwrap_or_default();
            let json_seal = vault.attest(&approvals_binding(id, &json))?;
            if !store::checkouts::add_approval(
                tx.conn(),
                id,
                &seen,
                &json,
                &json_seal,
                CheckoutState::Requested.as_str(),
                &now,
            )
            .await?
            {
                return Err(moved_on(id));
            }
            r.approvals = json;
        }
        ApprovalStep::Grants(approvals) => {
            // Under the write lock, as for a grant on request (`request`): no return's
            // rotation pending, no holder in the way.
            if let Some(why) = unrotated_return(store, &r.account_id).await? {
                return Err(Error::Conflict(why));
            }
            busy(
                store,
                vault,
                r.exclusive != 0,
                &r.requester,
                &r.account_id,
                Some(id),
            )
            .await?;
            let json = serde_json::to_string(&approvals).unwrap_or_default();
            let json_seal = vault.attest(&approvals_binding(id, &json))?;
            let ends = after_minutes(now_t, r.minutes).ok_or_else(|| too_far(r.minutes))?;
            let seal = vault.attest(&grant_binding(&r, &now, &ends))?;
            let granted = store::checkouts::grant(
                tx.conn(),
                id,
                &seen,
                CheckoutState::Requested.as_str(),
                CheckoutState::CheckedOut.as_str(),
                &Grant {
                    approvals: &json,
                    approvals_seal: &json_seal,
                    answered_by: Some(approver),
                    starts_at: &now,
                    ends_at: &ends,
                    grant_seal: &seal,
                },
            )
            .await;
            match granted {
                Ok(true) => {}
                Ok(false) => return Err(moved_on(id)),
                Err(e) => {
                    drop(tx);
                    return Err(held_elsewhere(store, &r.account_id, e).await);
                }
            }
            r.approvals = json;
            r.state = CheckoutState::CheckedOut.as_str().into();
            r.answered_by = Some(approver.to_string());
            r.starts_at = Some(now.clone());
            r.ends_at = Some(ends);
            r.grant_seal = Some(seal);
        }
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.checkout.approve",
            target: &r.account_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "checkout": r.id, "requester": r.requester,
                "approvals": approvals_of(&r.approvals).len(), "needed": r.approvals_needed,
            }),
        },
    )
    .await?;
    if CheckoutState::CheckedOut.is(&r.state) {
        audit::append(&mut tx, started_event(actor, &r)).await?;
        crate::notifications::notify(
            &mut tx,
            &r.requester,
            "checkout-granted",
            format!(
                "checkout {} of account {} is granted until {}; retrieve the password with \
                 POST /v1/accounts/{}/password/retrieve and check it in when done",
                r.id,
                r.account_id,
                r.ends_at.clone().unwrap_or_default(),
                r.account_id
            ),
            None,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(view(r, None))
}

fn moved_on(id: &str) -> Error {
    Error::Conflict(format!(
        "checkout '{id}' was answered by someone else just now; read it again"
    ))
}

/// Records a refused decision (`outcome: denied`), as refused listener decisions are.
async fn refused(
    store: &Store,
    actor: &Actor,
    r: &CheckoutRow,
    action: &str,
    e: &Error,
) -> Result<()> {
    if !matches!(e, Error::NotAllowed(_)) {
        return Ok(());
    }
    audit::record(
        store,
        NewEvent {
            actor,
            action,
            target: &r.account_id,
            outcome: Outcome::Denied,
            detail: serde_json::json!({ "checkout": r.id, "why": e.to_string() }),
        },
    )
    .await
}

/// `POST /v1/checkouts/{id}/reject`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    pub reason: String,
}

/// Rejects a request as one of its approvers (audited `access.checkout.reject`; the requester
/// is notified).
pub async fn reject(
    store: &Store,
    actor: &Actor,
    approver: &str,
    id: &str,
    input: RejectRequest,
) -> Result<Checkout> {
    let reason = crate::reset::jobs::check_reason(&input.reason)?;
    let r = row(store, id).await?;
    if !policy::names(&r.approvers).iter().any(|a| a == approver) || approver == r.requester {
        let e = Error::NotAllowed(format!(
            "{approver} is not an approver of checkout '{id}' and cannot reject it"
        ));
        refused(store, actor, &r, "access.checkout.reject", &e).await?;
        return Err(e);
    }
    close(
        store,
        actor,
        r,
        CheckoutState::Rejected,
        Some(approver),
        &reason,
    )
    .await
}

/// Takes back one's own unanswered request (audited `access.checkout.withdraw`).
pub async fn withdraw(store: &Store, actor: &Actor, user: &str, id: &str) -> Result<Checkout> {
    let r = row(store, id).await?;
    if r.requester != user {
        return Err(Error::NotAllowed(format!(
            "checkout '{id}' is {}'s request; only they can withdraw it",
            r.requester
        )));
    }
    close(
        store,
        actor,
        r,
        CheckoutState::Withdrawn,
        None,
        "taken back by its requester",
    )
    .await
}

/// Ends a request without a grant: rejected, withdrawn or lapsed.
pub(super) async fn close(
    store: &Store,
    actor: &Actor,
    mut r: CheckoutRow,
    to: CheckoutState,
    by: Option<&str>,
    reason: &str,
) -> Result<Checkout> {
    let now = crate::time::now();
    let mut tx = store.begin_write().await?;
    if !store::checkouts::close_request(
        tx.conn(),
        &r.id,
        CheckoutState::Requested.as_str(),
        to.as_str(),
        by,
        &now,
    )
    .await?
    {
        return Err(Error::Conflict(format!(
            "checkout '{}' is no longer waiting for an answer",
            r.id
        )));
    }
    let action = match to {
        CheckoutState::Rejected => "access.checkout.reject",
        CheckoutState::Withdrawn => "access.checkout.withdraw",
        _ => "access.checkout.lapse",
    };
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action,
            target: &r.account_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "checkout": r.id, "requester": r.requester, "reason": reason }),
        },
    )
    .await?;
    if by != Some(r.requester.as_str()) && to != CheckoutState::Withdrawn {
        crate::notifications::notify(
            &mut tx,
            &r.requester,
            "checkout-closed",
            format!(
                "your checkout {} of account {} was {} ({reason})",
                r.id,
                r.account_id,
                to.as_str()
            ),
            None,
        )
        .await?;
    }
    tx.commit().await?;
    r.state = to.as_str().into();
    r.answered_by = by.map(str::to_string);
    r.ended_at = Some(now);
    Ok(view(r, None))
}

/// Returns one's own checkout (audited `access.checkout.checkin`), then starts its rotation.
pub async fn check_in(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    user: &str,
    id: &str,
) -> Result<(Checkout, bool)> {
    let r = row(store, id).await?;
    if r.requester != user {
        return Err(Error::NotAllowed(format!(
            "checkout '{id}' is held by {}; only they check it in (an administrator can force \
             it with POST /v1/checkouts/{id}/force-checkin)",
            r.requester
        )));
    }
    end(store, vault, actor, r, CheckinKind::Holder, user).await
}

/// `POST /v1/checkouts/{id}/force-checkin`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceRequest {
    pub reason: String,
}

/// An administrator takes a checkout back before its window ends (audited, the holder is
/// notified), then its rotation starts.
pub async fn force_check_in(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    user: &str,
    id: &str,
    input: ForceRequest,
) -> Result<(Checkout, bool)> {
    crate::reset::jobs::check_reason(&input.reason)?;
    let r = row(store, id).await?;
    end(store, vault, actor, r, CheckinKind::Forced, user).await
}

/// Returns a held checkout (`checked-out` → `checked-in`, once), then starts its rotation when
/// the policy says so. True in the second field when a rotation job was started here. A
/// rotation that cannot start now is left to the sweep (`super::sweep`), which starts it.
pub(super) async fn end(
    store: &Store,
    vault: &Vault,
    actor: &Actor,
    mut r: CheckoutRow,
    kind: CheckinKind,
    by: &str,
) -> Result<(Checkout, bool)> {
    let now = crate::time::now();
    // Whether to rotate is read from the grant only when its seal holds: a row whose
    // `rotate_on_checkin` was cleared in the database is rotated all the same.
    let rotates = r.rotate_on_checkin != 0 || !grant_holds(vault, &r);
    let mut tx = store.begin_write().await?;
    if !store::checkouts::check_in(
        tx.conn(),
        &r.id,
        CheckoutState::CheckedOut.as_str(),
        CheckoutState::CheckedIn.as_str(),
        &store::checkouts::Return {
            kind: kind.as_str(),
            by,
            at: &now,
            rotates,
        },
    )
    .await?
    {
        return Err(Error::Conflict(format!(
            "checkout '{}' is {}, not checked out",
            r.id, r.state
        )));
    }
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "access.checkout.checkin",
            target: &r.account_id,
            outcome: Outcome::Success,
            detail: serde_json::json!({
                "checkout": r.id, "held_by": r.requester, "how": kind.as_str(),
                "rotate": r.rotate_on_checkin != 0,
            }),
        },
    )
    .await?;
    if kind != CheckinKind::Holder {
        crate::notifications::notify(
            &mut tx,
            &r.requester,
            "checkout-ended",
            format!(
                "your checkout {} of account {} ended ({}); the password you saw is being \
                 rotated",
                r.id,
                r.account_id,
                kind.as_str()
            ),
            None,
        )
        .await?;
    }
    tx.commit().await?;
    r.rotate_on_checkin = rotates.into();
    r.reset_job_id = None;
    r.state = CheckoutState::CheckedIn.as_str().into();
    r.end_kind = Some(kind.as_str().into());
    r.ended_by = Some(by.to_string());
    r.ended_at = Some(now);
    let started = if rotates {
        match rotate(store, vault, &r).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(checkout = %r.id, error = %e, "the check-in's rotation could not start; the sweep retries it");
                false
            }
        }
    } else {
        false
    };
    let r = row(store, &r.id).await?;
    let rotation = rotation_of(store, &r).await?;
    Ok((view(r, rotation), started))
}

/// Starts a returned checkout's rotation (one job per return, whichever node asks: a checkout
/// put back to `checked-out` in the database and ended again is rotated again) and records it
/// on the checkout.
pub(super) async fn rotate(store: &Store, vault: &Vault, r: &CheckoutRow) -> Result<()> {
    let ended = r.ended_at.as_deref().unwrap_or_default();
    let job = crate::reset::jobs::start_checkin(store, vault, &r.id, ended, &r.account_id).await?;
    let mut tx = store.begin_write().await?;
    store::checkouts::set_reset_job(tx.conn(), &r.id, ended, &job.id).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(approvers: &[&str], needed: i64) -> CheckoutRow {
        CheckoutRow {
            id: "cko_1".into(),
            account_id: "acc_1".into(),
            requester: "amy".into(),
            reason: "fix the database".into(),
            minutes: 30,
            state: CheckoutState::Requested.as_str().into(),
            approvers: serde_json::to_string(approvers).unwrap(),
            approvals_needed: needed,
            approvals: "[]".into(),
            request_seal: String::new(),
            approvals_seal: String::new(),
            exclusive: 1,
            rotate_on_checkin: 1,
            requested_at: "2026-12-01T10:00:00.000000Z".into(),
            answer_by: "2026-12-02T10:00:00.000000Z".into(),
            answered_by: None,
            starts_at: None,
            ends_at: None,
            grant_seal: None,
            ended_at: None,
            ended_by: None,
            end_kind: None,
            reset_job_id: None,
            updated_at: "2026-12-01T10:00:00.000000Z".into(),
        }
    }

    const NOW: &str = "2026-12-01T11:00:00.000000Z";

    #[test]
    fn the_requester_and_strangers_cannot_approve_and_nobody_counts_twice() {
        let r = requested(&["bob", "cat"], 2);
        assert!(matches!(
            decide_approval(&r, "amy", NOW),
            Err(Error::NotAllowed(_))
        ));
        assert!(matches!(
            decide_approval(&r, "eve", NOW),
            Err(Error::NotAllowed(_))
        ));
        let ApprovalStep::Counted(one) = decide_approval(&r, "bob", NOW).unwrap() else {
            panic!("one of two approvals does not grant");
        };
        let mut r2 = r.clone();
        r2.approvals = serde_json::to_string(&one).unwrap();
        assert!(matches!(
            decide_approval(&r2, "bob", NOW),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            decide_approval(&r2, "cat", NOW).unwrap(),
            ApprovalStep::Grants(two) if two.len() == 2
        ));
    }

    #[test]
    fn a_request_past_its_answer_time_or_already_answered_takes_no_approval() {
        let mut r = requested(&["bob"], 1);
        assert!(matches!(
            decide_approval(&r, "bob", "2026-12-02T10:00:00.000000Z"),
            Err(Error::Conflict(_))
        ));
        r.state = CheckoutState::Rejected.as_str().into();
        assert!(matches!(
            decide_approval(&r, "bob", NOW),
            Err(Error::Conflict(_))
        ));
    }

    fn held(holder: &str, ends: &str, exclusive: bool) -> CheckoutRow {
        let mut r = requested(&["bob"], 1);
        r.id = format!("cko_{holder}");
        r.requester = holder.into();
        r.state = CheckoutState::CheckedOut.as_str().into();
        r.starts_at = Some("2026-12-01T10:30:00.000000Z".into());
        r.ends_at = Some(ends.into());
        r.exclusive = exclusive.into();
        r
    }

    #[test]
    fn only_the_holder_of_an_open_sealed_window_passes_the_gate() {
        let open = "2026-12-01T12:00:00.000000Z";
        let over = "2026-12-01T10:59:59.000000Z";
        let amy = held("amy", open, true);
        assert_eq!(
            decide_gate(&[(amy.clone(), true)], "amy", NOW),
            Gate::Holds("cko_amy".into())
        );
        assert_eq!(
            decide_gate(&[(amy.clone(), true)], "bob", NOW),
            Gate::HeldBy {
                holder: "amy".into(),
                until: open.into()
            }
        );
        // A grant whose seal fails, or whose window is over, grants nothing and holds nobody off.
        assert_eq!(
            decide_gate(&[(amy.clone(), false)], "amy", NOW),
            Gate::NeedsCheckout
        );
        assert_eq!(
            decide_gate(&[(amy, false)], "bob", NOW),
            Gate::NeedsCheckout
        );
        assert_eq!(
            decide_gate(&[(held("amy", over, true), true)], "amy", NOW),
            Gate::NeedsCheckout
        );
        // A shared holder does not shut others out, and does not read during another's
        // exclusive window (a policy made exclusive while a shared request waited).
        assert_eq!(
            decide_gate(&[(held("amy", open, false), true)], "bob", NOW),
            Gate::NeedsCheckout
        );
        let both = [
            (held("amy", open, false), true),
            (held("bob", open, true), true),
        ];
        assert_eq!(
            decide_gate(&both, "amy", NOW),
            Gate::HeldBy {
                holder: "bob".into(),
                until: open.into()
            }
        );
        assert_eq!(
            decide_gate(&both, "bob", NOW),
            Gate::Holds("cko_bob".into())
        );
    }

    #[test]
    fn a_request_edited_after_it_was_sealed_or_given_forged_approvals_is_refused() {
        let vault = Vault::new(crate::vault::MasterKey::from_bytes([7u8; 32]));
        let mut r = requested(&["bob", "cat"], 2);
        r.request_seal = vault.attest(&request_binding(&r)).unwrap();
        r.approvals_seal = vault
            .attest(&approvals_binding(&r.id, &r.approvals))
            .unwrap();
        assert_eq!(request_tampered(&vault, &r), None);
        for edit in [
            |r: &mut CheckoutRow| r.minutes = 525_600,
            |r: &mut CheckoutRow| r.exclusive = 0,
            |r: &mut CheckoutRow| r.approvals_needed = 1,
            |r: &mut CheckoutRow| r.rotate_on_checkin = 0,
            |r: &mut CheckoutRow| r.approvers = r#"["eve"]"#.into(),
            |r: &mut CheckoutRow| r.requester = "eve".into(),
            |r: &mut CheckoutRow| r.answer_by = "2999-01-01T00:00:00.000000Z".into(),
        ] {
            let mut edited = r.clone();
            edit(&mut edited);
            assert!(request_tampered(&vault, &edited).is_some(), "{edited:?}");
        }
        let mut forged = r.clone();
        forged.approvals = r#"[{"user":"cat","at":"2026-12-01T10:30:00.000000Z"}]"#.into();
        assert!(
            request_tampered(&vault, &forged)
                .unwrap()
                .contains("approvals")
        );
        // A grant binds whether the return rotates.
        let mut g = held("amy", "2026-12-01T12:00:00.000000Z", true);
        let (s, e) = (g.starts_at.clone().unwrap(), g.ends_at.clone().unwrap());
        g.grant_seal = Some(vault.attest(&grant_binding(&g, &s, &e)).unwrap());
        assert!(grant_holds(&vault, &g));
        g.rotate_on_checkin = 0;
        assert!(!grant_holds(&vault, &g));
    }

    #[test]
    fn a_window_past_any_date_is_refused_not_a_panic() {
        let now = crate::time::now_utc();
        assert!(after_minutes(now, 60).is_some());
        assert!(after_minutes(now, i64::MAX).is_none());
    }
}
