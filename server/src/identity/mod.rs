//! Identities: users, roles, API tokens, and the one authorization decision.
//!
//! **Invariant:** [`Principal::require`] is the only place that decides whether a caller may do
//! something. The HTTP layer calls it through one extractor; nothing else checks roles.

pub mod activation;
pub mod custody;
pub mod privilege;
pub mod seal;
pub mod token;

pub use privilege::{BUILTIN_ROLES, Privilege};

use chrono::Duration;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, FieldProblem, Result};
use crate::registry::Registry;
use crate::store::roles::RoleRow;
use crate::store::tokens::TokenRow;
use crate::store::users::UserRow;
use crate::store::{self, Page, PageRequest, Store, WriteTx};

/// Default lifetime of a new API token.
pub const DEFAULT_TOKEN_DAYS: i64 = 90;
/// Longest lifetime a token may be given.
pub const MAX_TOKEN_DAYS: i64 = 3650;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    pub role: String,
    pub privileges: Vec<Privilege>,
    pub token_id: String,
}

impl Principal {
    /// The authorization decision.
    pub fn require(&self, privilege: Privilege) -> Result<()> {
        if self.privileges.contains(&privilege) {
            Ok(())
        } else {
            Err(Error::Forbidden(privilege.as_str().to_string()))
        }
    }

    pub fn actor(&self, source_ip: Option<String>) -> Actor {
        Actor::user(&self.user_name, source_ip)
    }
}

/// Resolves a bearer token to its user. Unknown, expired and revoked tokens are all refused
/// with a message that says which, without echoing the token; so is a token whose user's
/// identity fails its seal ([`seal::verified`]): a token row a database writer inserted or
/// moved, a role raised, a revoked token brought back.
pub async fn authenticate(
    store: &Store,
    registry: &Registry,
    token_text: &str,
) -> Result<Principal> {
    if !token_text.starts_with(token::PREFIX) {
        return Err(Error::Unauthenticated(
            "the bearer token is not a Lockstep token (lst_…)",
        ));
    }
    let row = store::tokens::get_by_hash(store.pool(), &token::hash(token_text))
        .await?
        .ok_or(Error::Unauthenticated("the bearer token is unknown"))?;
    if row.revoked_at.is_some() {
        return Err(Error::Unauthenticated("the bearer token was revoked"));
    }
    let identity = seal::verified(store, registry, &row.user_id)
        .await?
        .ok_or(Error::Unauthenticated("the token's user no longer exists"))?;
    // The identity's seal covers its live tokens: this one must be among them, as it is.
    let sealed = identity
        .tokens
        .iter()
        .find(|t| t.id == row.id && t.token_sha256 == row.token_sha256)
        .ok_or(Error::Unauthenticated("the bearer token is unknown"))?;
    if sealed.expires_at <= crate::time::now() {
        return Err(Error::Unauthenticated("the bearer token has expired"));
    }
    let privileges = role_privileges(&identity.user.role, identity.role_privileges.as_deref());
    Ok(Principal {
        user_id: identity.user.id,
        user_name: identity.user.name,
        role: identity.user.role,
        privileges,
        token_id: row.id,
    })
}

/// The privileges of the role called `role` whose row stores `stored`: a built-in role's come
/// from the code, whatever its row says.
pub fn role_privileges(role: &str, stored: Option<&str>) -> Vec<Privilege> {
    match privilege::builtin(role) {
        Some(p) => p.to_vec(),
        None => stored.map(privilege::decode).unwrap_or_default(),
    }
}

/// Writes the built-in roles (idempotent; run at every start).
pub async fn seed_builtin_roles(store: &Store) -> Result<()> {
    let mut tx = store.begin_write().await?;
    for r in BUILTIN_ROLES {
        let row = RoleRow {
            name: r.name.to_string(),
            description: r.description.to_string(),
            privileges: privilege::encode(r.privileges),
            builtin: 1,
            created_at: crate::time::now(),
        };
        store::roles::upsert_builtin(tx.conn(), &row).await?;
    }
    tx.commit().await
}

// ---- users ---------------------------------------------------------------------------------

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Where notifications are mailed (when the server has an SMTP relay).
    pub email: Option<String>,
    pub created_at: String,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            id: r.id,
            name: r.name,
            role: r.role,
            email: r.email,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
    pub name: String,
    /// A built-in role (`privileged-admin`, `admin`, `password-admin`, `auditor`,
    /// `password-user`) or a custom role's name.
    pub role: String,
    /// Optional: where notifications are mailed when the server has an SMTP relay.
    pub email: Option<String>,
}

/// A plain `local@domain` address, at most 254 characters: enough to mail it, nothing that
/// could smuggle a header.
pub fn validate_email(field: &str, email: &str) -> Option<FieldProblem> {
    let plain = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && email.matches('@').count() == 1
        && email
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | ';' | '"'));
    (!plain).then(|| FieldProblem::new(field, "must be a plain address such as alice@example.com"))
}

/// A login name: 1–64 letters, digits, `.`, `_`, `-` or `@`.
pub fn validate_name(field: &str, name: &str) -> Option<FieldProblem> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 {
        Some(FieldProblem::new(field, "must be 1 to 64 characters long"))
    } else if !name.chars().all(ok_char) {
        Some(FieldProblem::new(
            field,
            "may contain only letters, digits, '.', '_', '-' and '@'",
        ))
    } else {
        None
    }
}

/// A user just created, with the activation code its first credential comes from (none when
/// the host CLI created it and issues a token itself).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    /// Shown only now: hand it to the user, who spends it on `POST /v1/activate`.
    pub activation: Option<activation::Activation>,
}

/// Refuses unless `caller` holds every privilege of `role`: nobody hands out (or takes over
/// an account with) privileges they do not hold themselves.
pub async fn require_all_of_role(store: &Store, caller: &Principal, role: &str) -> Result<()> {
    let Some(row) = store::roles::get(store.pool(), role).await? else {
        return Ok(());
    };
    let missing: Vec<Privilege> = role_privileges(role, Some(&row.privileges))
        .into_iter()
        .filter(|p| !caller.privileges.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::NotAllowed(format!(
        "role '{role}' holds privileges your role does not ({}); only someone who holds all \
         of them may give it or act on an account that has it",
        privilege::names(&missing)
    )))
}

/// Creates a user. `creator` is the API caller (None: the host's `lockstep admin create`); an
/// API caller may give only a role whose privileges they all hold, becomes a custodian of the
/// new account, and gets its activation code.
pub async fn create_user(
    store: &Store,
    creator: Option<&Principal>,
    actor: &Actor,
    input: NewUser,
) -> Result<CreatedUser> {
    let mut problems: Vec<FieldProblem> = validate_name("name", &input.name).into_iter().collect();
    if let Some(email) = &input.email {
        problems.extend(validate_email("email", email));
    }
    if store::roles::get(store.pool(), &input.role)
        .await?
        .is_none()
    {
        problems.push(FieldProblem::new(
            "role",
            format!("no role named '{}'; GET /v1/roles lists them", input.role),
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    if let Some(caller) = creator {
        require_all_of_role(store, caller, &input.role).await?;
    }
    let row = UserRow {
        id: crate::time::new_id("usr"),
        name: input.name,
        role: input.role,
        created_at: crate::time::now(),
        email: input.email,
    };
    let mut change = seal::IdentityChange::begin(store).await?;
    // The creator's custody is passed on: read from their checked, sealed identity.
    let issuer = match creator {
        Some(c) => Some(
            change
                .check(&c.user_id)
                .await?
                .ok_or(Error::Unauthenticated(
                    "the caller's account no longer exists",
                ))?,
        ),
        None => None,
    };
    store::users::insert(change.tx().conn(), &row)
        .await
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Conflict(format!("a user named '{}' already exists", row.name))
            } else {
                e.into()
            }
        })?;
    custody::record(change.tx(), &row.name, issuer.as_ref(), &row.created_at).await?;
    let activation = match &issuer {
        Some(by) => Some(
            activation::write_code(change.tx(), &row.id, &row.name, Some(&by.user.name)).await?,
        ),
        None => None,
    };
    audit::append(
        change.tx(),
        NewEvent {
            actor,
            action: "user.create",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "name": row.name, "role": row.role }),
        },
    )
    .await?;
    change.commit(&[&row.id], "user.create").await?;
    Ok(CreatedUser {
        user: row.into(),
        activation,
    })
}

pub async fn get_user(store: &Store, id: &str) -> Result<User> {
    store::users::get(store.pool(), id)
        .await?
        .map(User::from)
        .ok_or_else(|| Error::NotFound {
            what: "user",
            id: id.to_string(),
        })
}

/// The privileges of the user called `name`; `None` when there is no such user.
pub async fn privileges_of(store: &Store, name: &str) -> Result<Option<Vec<Privilege>>> {
    let Some(user) = store::users::get_by_name(store.pool(), name).await? else {
        return Ok(None);
    };
    let role = store::roles::get(store.pool(), &user.role).await?;
    Ok(Some(role_privileges(
        &user.role,
        role.as_ref().map(|r| r.privileges.as_str()),
    )))
}

pub async fn list_users(store: &Store, page: &PageRequest) -> Result<Page<User>> {
    let p = store::users::list(store.pool(), page).await?;
    Ok(Page {
        items: p.items.into_iter().map(User::from).collect(),
        next_after: p.next_after,
    })
}

// ---- tokens --------------------------------------------------------------------------------

/// A token's metadata (never the token).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

impl From<TokenRow> for TokenInfo {
    fn from(r: TokenRow) -> TokenInfo {
        TokenInfo {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label for the token, e.g. `ci` or `laptop`. Default `api`.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime in days, 1–3650. Default 90.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// A freshly issued token: the only time its text is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token. Store it now: Lockstep keeps only its hash.
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

pub async fn issue_token(
    store: &Store,
    actor: &Actor,
    user_id: &str,
    input: NewToken,
) -> Result<IssuedToken> {
    let mut change = seal::IdentityChange::begin(store).await?;
    if change.check(user_id).await?.is_none() {
        return Err(Error::NotFound {
            what: "user",
            id: user_id.to_string(),
        });
    }
    let issued = write_token(change.tx(), actor, user_id, input).await?;
    change.commit(&[user_id], "token.issue").await?;
    Ok(issued)
}

/// Writes a new token of `user_id` (checked by the caller's identity change) and its audit
/// event inside `tx`.
pub(crate) async fn write_token(
    tx: &mut WriteTx,
    actor: &Actor,
    user_id: &str,
    input: NewToken,
) -> Result<IssuedToken> {
    let days = input.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(Error::validation(
            "expires_in_days",
            format!("must be between 1 and {MAX_TOKEN_DAYS}"),
        ));
    }
    let name = input.name.unwrap_or_else(|| "api".into());
    if name.is_empty() || name.len() > 64 {
        return Err(Error::validation("name", "must be 1 to 64 characters long"));
    }
    let text: Zeroizing<String> = token::generate()?;
    let now = crate::time::now_utc();
    let row = TokenRow {
        id: crate::time::new_id("tok"),
        user_id: user_id.to_string(),
        name,
        token_sha256: token::hash(&text),
        created_at: crate::time::format(now),
        expires_at: crate::time::format(now + Duration::days(days)),
        revoked_at: None,
    };
    store::tokens::insert(tx.conn(), &row).await?;
    audit::append(
        tx,
        NewEvent {
            actor,
            action: "token.issue",
            target: &row.id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "user_id": row.user_id, "expires_at": row.expires_at }),
        },
    )
    .await?;
    Ok(IssuedToken {
        info: row.into(),
        token: text.to_string(),
    })
}

pub async fn list_tokens(store: &Store, user_id: &str) -> Result<Vec<TokenInfo>> {
    Ok(store::tokens::list_for_user(store.pool(), user_id)
        .await?
        .into_iter()
        .map(TokenInfo::from)
        .collect())
}

/// Revokes a token. `caller` may revoke their own tokens; revoking another user's token needs
/// `manage-users`.
pub async fn revoke_token(
    store: &Store,
    caller: &Principal,
    actor: &Actor,
    id: &str,
) -> Result<TokenInfo> {
    let not_found = || Error::NotFound {
        what: "token",
        id: id.to_string(),
    };
    let row = store::tokens::get(store.pool(), id)
        .await?
        .ok_or_else(not_found)?;
    if row.user_id != caller.user_id {
        caller.require(Privilege::ManageUsers)?;
    }
    let mut change = seal::IdentityChange::begin(store).await?;
    change.check(&row.user_id).await?;
    let at = crate::time::now();
    if !store::tokens::revoke(change.tx().conn(), id, &at).await? {
        return Err(Error::Conflict(format!("token '{id}' is already revoked")));
    }
    audit::append(
        change.tx(),
        NewEvent {
            actor,
            action: "token.revoke",
            target: id,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "user_id": row.user_id }),
        },
    )
    .await?;
    change.commit(&[&row.user_id], "token.revoke").await?;
    let row = store::tokens::get(store.pool(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(row.into())
}

// ---- roles ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub privileges: Vec<Privilege>,
    pub builtin: bool,
}

impl From<RoleRow> for Role {
    fn from(r: RoleRow) -> Role {
        Role {
            privileges: role_privileges(&r.name, Some(&r.privileges)),
            name: r.name,
            description: r.description,
            builtin: r.builtin != 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// At least one privilege.
    pub privileges: Vec<Privilege>,
}

pub async fn list_roles(store: &Store) -> Result<Vec<Role>> {
    Ok(store::roles::list(store.pool())
        .await?
        .into_iter()
        .map(Role::from)
        .collect())
}

/// Creates a custom role; `caller` must hold every privilege it lists.
pub async fn create_role(
    store: &Store,
    caller: &Principal,
    actor: &Actor,
    input: NewRole,
) -> Result<Role> {
    let missing: Vec<Privilege> = input
        .privileges
        .iter()
        .copied()
        .filter(|p| !caller.privileges.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(Error::NotAllowed(format!(
            "a role can list only privileges your own role holds; yours lacks {}",
            privilege::names(&missing)
        )));
    }
    let mut problems: Vec<FieldProblem> = validate_name("name", &input.name).into_iter().collect();
    if input.privileges.is_empty() {
        problems.push(FieldProblem::new(
            "privileges",
            "must list at least one privilege",
        ));
    }
    if input.description.len() > 500 {
        problems.push(FieldProblem::new(
            "description",
            "must be at most 500 characters",
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Validation(problems));
    }
    let row = RoleRow {
        name: input.name,
        description: input.description,
        privileges: privilege::encode(&input.privileges),
        builtin: 0,
        created_at: crate::time::now(),
    };
    let mut tx = store.begin_write().await?;
    store::roles::insert(tx.conn(), &row).await.map_err(|e| {
        if store::is_unique_violation(&e) {
            Error::Conflict(format!("a role named '{}' already exists", row.name))
        } else {
            e.into()
        }
    })?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "role.create",
            target: &row.name,
            outcome: Outcome::Success,
            detail: serde_json::json!({ "privileges": row.privileges }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn delete_role(store: &Store, actor: &Actor, name: &str) -> Result<()> {
    let role = store::roles::get(store.pool(), name)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "role",
            id: name.to_string(),
        })?;
    if role.builtin != 0 {
        return Err(Error::Conflict(format!(
            "'{name}' is a built-in role and cannot be deleted"
        )));
    }
    let users = store::users::count_with_role(store.pool(), name).await?;
    if users > 0 {
        return Err(Error::Conflict(format!(
            "role '{name}' is held by {users} user(s); give them another role first"
        )));
    }
    let mut tx = store.begin_write().await?;
    store::roles::delete_custom(tx.conn(), name).await?;
    audit::append(
        &mut tx,
        NewEvent {
            actor,
            action: "role.delete",
            target: name,
            outcome: Outcome::Success,
            detail: serde_json::Value::Null,
        },
    )
    .await?;
    tx.commit().await
}
