//! Checkouts: requests for an account's password, their answers and windows
//! (`access::checkout`). Every transition is conditional on the state it leaves, so two nodes
//! (or a holder and the expiry sweep) deciding at once make one transition.

use sqlx::{AnyConnection, AnyPool, FromRow};

use super::{Page, PageRequest};
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct CheckoutRow {
    pub id: String,
    pub account_id: String,
    pub requester: String,
    pub reason: String,
    pub minutes: i64,
    /// `states::CheckoutState`.
    pub state: String,
    /// JSON array of user names.
    pub approvers: String,
    pub approvals_needed: i64,
    /// JSON array of `{user, at}`.
    pub approvals: String,
    /// `Vault::attest` over the request's terms (`access::checkout`).
    pub request_seal: String,
    /// `Vault::attest` over the approvals counted so far.
    pub approvals_seal: String,
    pub exclusive: i64,
    pub rotate_on_checkin: i64,
    pub requested_at: String,
    pub answer_by: String,
    pub answered_by: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub grant_seal: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    /// `states::CheckinKind`.
    pub end_kind: Option<String>,
    pub reset_job_id: Option<String>,
    pub updated_at: String,
}

macro_rules! columns {
    () => {
        "id, account_id, requester, reason, minutes, state, approvers, approvals_needed, \
         approvals, request_seal, approvals_seal, exclusive, rotate_on_checkin, requested_at, answer_by, answered_by, \
         starts_at, ends_at, grant_seal, ended_at, ended_by, end_kind, reset_job_id, updated_at"
    };
}

/// Inserts a new checkout (a request, or one granted at once). An exclusive grant that would
/// make a second holder of its account fails on `checkouts_one_holder`.
pub async fn insert(conn: &mut AnyConnection, r: &CheckoutRow) -> Result<(), super::Error> {
    sqlx::query(concat!(
        "INSERT INTO checkouts (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24)"
    ))
    .bind(&r.id)
    .bind(&r.account_id)
    .bind(&r.requester)
    .bind(&r.reason)
    .bind(r.minutes)
    .bind(&r.state)
    .bind(&r.approvers)
    .bind(r.approvals_needed)
    .bind(&r.approvals)
    .bind(&r.request_seal)
    .bind(&r.approvals_seal)
    .bind(r.exclusive)
    .bind(r.rotate_on_checkin)
    .bind(&r.requested_at)
    .bind(&r.answer_by)
    .bind(&r.answered_by)
    .bind(&r.starts_at)
    .bind(&r.ends_at)
    .bind(&r.grant_seal)
    .bind(&r.ended_at)
    .bind(&r.ended_by)
    .bind(&r.end_kind)
    .bind(&r.reset_job_id)
    .bind(&r.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<CheckoutRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The same, read inside a write transaction.
pub async fn get_in(conn: &mut AnyConnection, id: &str) -> Result<Option<CheckoutRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Which checkouts a page lists.
#[derive(Debug, Clone, Default)]
pub struct CheckoutFilter {
    pub account_id: Option<String>,
    pub requester: Option<String>,
    pub state: Option<String>,
}

/// A page of checkouts, oldest first, narrowed by the filter.
pub async fn list(
    pool: &AnyPool,
    filter: &CheckoutFilter,
    page: &PageRequest,
) -> Result<Page<CheckoutRow>> {
    // Fixed text and numbered placeholders only; every value is bound.
    let mut sql = String::from(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE id > $1"
    ));
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [
        ("account_id", &filter.account_id),
        ("requester", &filter.requester),
        ("state", &filter.state),
    ] {
        if let Some(v) = value {
            values.push(v);
            sql.push_str(&format!(" AND {column} = ${}", values.len() + 1));
        }
    }
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len() + 2));
    let mut query =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(page.after.clone().unwrap_or_default());
    for v in values {
        query = query.bind(v);
    }
    let rows = query.bind(page.limit + 1).fetch_all(pool).await?;
    Ok(Page::from_rows(rows, page.limit, |r: &CheckoutRow| {
        r.id.clone()
    }))
}

/// The account's checkouts in `state` (few: a requested or held checkout is open for minutes
/// or hours), newest first.
pub async fn of_account_in(
    pool: &AnyPool,
    account_id: &str,
    state: &str,
) -> Result<Vec<CheckoutRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE account_id = $1 AND state = $2 ORDER BY id DESC"
    ))
    .bind(account_id)
    .bind(state)
    .fetch_all(pool)
    .await?)
}

/// The account's most recently returned checkout that was to be rotated, if any.
pub async fn last_returned(
    pool: &AnyPool,
    account_id: &str,
    checked_in: &str,
) -> Result<Option<CheckoutRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE account_id = $1 AND state = $2 AND rotate_on_checkin = 1 \
         ORDER BY ended_at DESC LIMIT 1"
    ))
    .bind(account_id)
    .bind(checked_in)
    .fetch_optional(pool)
    .await?)
}

/// Records an approval that does not yet grant: only if the approvals are still the ones read.
pub async fn add_approval(
    conn: &mut AnyConnection,
    id: &str,
    seen: &str,
    approvals: &str,
    approvals_seal: &str,
    requested: &str,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE checkouts SET approvals = $3, approvals_seal = $4, updated_at = $6 \
         WHERE id = $1 AND approvals = $2 AND state = $5",
    )
    .bind(id)
    .bind(seen)
    .bind(approvals)
    .bind(approvals_seal)
    .bind(requested)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What a grant writes.
pub struct Grant<'a> {
    pub approvals: &'a str,
    pub approvals_seal: &'a str,
    pub answered_by: Option<&'a str>,
    pub starts_at: &'a str,
    pub ends_at: &'a str,
    pub grant_seal: &'a str,
}

/// Grants a requested checkout: only if it is still requested with the approvals read. An
/// exclusive grant beside another holder fails on `checkouts_one_holder`.
pub async fn grant(
    conn: &mut AnyConnection,
    id: &str,
    seen: &str,
    requested: &str,
    checked_out: &str,
    g: &Grant<'_>,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE checkouts SET state = $4, approvals = $5, answered_by = $6, starts_at = $7, \
         ends_at = $8, grant_seal = $9, approvals_seal = $10, updated_at = $7 \
         WHERE id = $1 AND approvals = $2 AND state = $3",
    )
    .bind(id)
    .bind(seen)
    .bind(requested)
    .bind(checked_out)
    .bind(g.approvals)
    .bind(g.answered_by)
    .bind(g.starts_at)
    .bind(g.ends_at)
    .bind(g.grant_seal)
    .bind(g.approvals_seal)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Closes a request unanswered for good (rejected, lapsed, withdrawn): only if it is still
/// requested.
pub async fn close_request(
    conn: &mut AnyConnection,
    id: &str,
    requested: &str,
    to: &str,
    answered_by: Option<&str>,
    at: &str,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE checkouts SET state = $3, answered_by = $4, ended_at = $5, updated_at = $5 \
         WHERE id = $1 AND state = $2",
    )
    .bind(id)
    .bind(requested)
    .bind(to)
    .bind(answered_by)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What a return writes besides its state.
pub struct Return<'a> {
    /// `states::CheckinKind`.
    pub kind: &'a str,
    pub by: &'a str,
    pub at: &'a str,
    /// Whether the return is rotated (written as `rotate_on_checkin`, so the sweep and the
    /// reuse check follow a rotation the grant called for even if the row said otherwise).
    pub rotates: bool,
}

/// Returns a held checkout: only if it is still held. The rotation of an earlier return (a row
/// put back to held in the database) is forgotten: this return's own is started next.
pub async fn check_in(
    conn: &mut AnyConnection,
    id: &str,
    checked_out: &str,
    checked_in: &str,
    r: &Return<'_>,
) -> Result<bool, super::Error> {
    let done = sqlx::query(
        "UPDATE checkouts SET state = $3, end_kind = $4, ended_by = $5, ended_at = $6, \
         updated_at = $6, rotate_on_checkin = $7, reset_job_id = NULL \
         WHERE id = $1 AND state = $2",
    )
    .bind(id)
    .bind(checked_out)
    .bind(checked_in)
    .bind(r.kind)
    .bind(r.by)
    .bind(r.at)
    .bind(i64::from(r.rotates))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records the rotation of the return that ended at `ended_at` (a later return of the same
/// checkout, if any, keeps its own).
pub async fn set_reset_job(
    conn: &mut AnyConnection,
    id: &str,
    ended_at: &str,
    job_id: &str,
) -> Result<(), super::Error> {
    sqlx::query("UPDATE checkouts SET reset_job_id = $3 WHERE id = $1 AND ended_at = $2")
        .bind(id)
        .bind(ended_at)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the account has a checkout still open (requested or held) or returned without its
/// rotation started: an account deleted then would leave a window no rotation can close.
pub async fn open_on(pool: &AnyPool, account_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM checkouts WHERE account_id = $1 AND (state IN ('requested', \
         'checked-out') OR (state = 'checked-in' AND rotate_on_checkin = 1 \
         AND reset_job_id IS NULL))",
    )
    .bind(account_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

/// Open requests whose answer is overdue and windows that have ended at `now`: what the expiry
/// sweep closes. At most `limit` of each.
pub async fn due(
    pool: &AnyPool,
    now: &str,
    requested: &str,
    checked_out: &str,
    limit: i64,
) -> Result<Vec<CheckoutRow>> {
    let mut rows: Vec<CheckoutRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE state IN ('requested', 'checked-out') AND state = $1 \
         AND answer_by <= $2 ORDER BY answer_by LIMIT $3"
    ))
    .bind(requested)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.extend(
        sqlx::query_as::<_, CheckoutRow>(concat!(
            "SELECT ",
            columns!(),
            " FROM checkouts WHERE state IN ('requested', 'checked-out') AND state = $1 \
             AND ends_at <= $2 ORDER BY ends_at LIMIT $3"
        ))
        .bind(checked_out)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?,
    );
    Ok(rows)
}

/// Returned checkouts whose rotation has not been started (a node died between the return and
/// the job). At most `limit`.
pub async fn unrotated(pool: &AnyPool, limit: i64) -> Result<Vec<CheckoutRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM checkouts WHERE state = 'checked-in' AND rotate_on_checkin = 1 \
         AND reset_job_id IS NULL ORDER BY id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
