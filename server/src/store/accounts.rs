//! Accounts: users (argon2id password hashes, superuser flag), groups and
//! membership, API tokens and login sessions.
//!
//! An account belongs to one authentication source (`users.auth_source`):
//! `local` accounts are checked against their hash here; accounts an
//! authentication plugin created are checked by that plugin only, and their
//! superuser flag and plugin-given groups are synced by [`Store::external_login`].
//! A membership records who made it (`group_members.source`: `''` for an
//! administrator, a plugin entry's name for a synced one), so a sync takes away
//! only what that plugin gave.
//!
//! Tokens and session ids are random 256-bit values shown to their owner once;
//! only their SHA-256 is stored, so a copy of the database does not let anyone
//! log in. (A fast hash is right here: the values are random, not passwords.)

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::row::{self, get_bool, get_i64, get_str, FromRow};
use super::validate::{self as v, ValidationError};
use super::*;

/// A random password of `len` letters and digits.
pub(crate) fn random_password(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = OsRng;
    (0..len).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

/// A random 256-bit value, URL-safe base64.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Config(format!("password hashing failed: {e}")))
}

fn verify_hash(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// How many password checks run at once (each holds argon2's 19 MiB).
static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

/// Sets how many password checks run at once; the first call wins (the
/// server calls it at start with `limits.password_hash_concurrency`).
pub fn set_hash_concurrency(n: usize) {
    let _ = HASHING.set(tokio::sync::Semaphore::new(n.max(1)));
}

/// Checks `password` against `hash` on the blocking pool, at most
/// [`set_hash_concurrency`] at once (one per core unless set): a flood of
/// logins waits its turn instead of allocating argon2's memory per request.
async fn verify_bounded(password: &str, hash: String) -> bool {
    let semaphore = HASHING.get_or_init(|| tokio::sync::Semaphore::new(crate::settings::Limits::or_cores(0)));
    let Ok(_permit) = semaphore.acquire().await else { return false };
    let password = password.to_string();
    tokio::task::spawn_blocking(move || verify_hash(&password, &hash)).await.unwrap_or(false)
}

/// The password rules (at least 8 characters).
pub fn check_password(p: &str) -> Result<(), ValidationError> {
    if p.chars().count() < 8 {
        return Err(ValidationError::new("password", "must be at least 8 characters"));
    }
    Ok(())
}

/// What [`Store::external_login`] made of a login a plugin accepted.
#[derive(Debug)]
pub enum ExternalLogin {
    /// The account, created now (`created`) or before, with its flags and
    /// groups synced; `skipped_groups` names groups that could not be made
    /// (invalid names), with why.
    Ready {
        /// The account after the sync.
        user: User,
        /// Whether this login created it.
        created: bool,
        /// Group names that were not valid group names, with the reason.
        skipped_groups: Vec<String>,
    },
    /// An account of that name belongs to another source (named): it is not taken over.
    OwnedElsewhere(String),
    /// The account exists but is deactivated.
    Inactive,
    /// The username cannot be a Vespene account name (the reason).
    InvalidName(String),
}

/// How often a token's `last_used_at` moves: at most once a minute.
const TOKEN_USE_GRANULARITY_MS: i64 = 60_000;

impl Store {
    /// How many users exist.
    pub async fn user_count(&self) -> Result<i64> {
        Ok(self.read_row("SELECT COUNT(*) AS n FROM users", &[], |r| get_i64(r, "n")).await?.unwrap_or_default())
    }

    /// Creates a user; the password is hashed with argon2id.
    pub async fn create_user(&self, u: &NewUser) -> Result<Id> {
        self.create_user_in_groups(u, &[]).await
    }

    /// Creates a local account and its group memberships in one transaction:
    /// a group that does not exist leaves nothing saved.
    pub async fn create_user_in_groups(&self, u: &NewUser, group_ids: &[Id]) -> Result<Id> {
        let hash = checked_new_user(u)?;
        let mut tx = self.begin_write().await?;
        let id = insert_user(&mut tx, u, hash, group_ids).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// [`Store::create_user_in_groups`] with the audit record `audit` makes
    /// of the account as stored, in the same transaction.
    pub async fn create_user_audited(
        &self,
        u: &NewUser,
        group_ids: &[Id],
        audit: impl FnOnce(&User) -> AuditEntry,
    ) -> Result<User> {
        let hash = checked_new_user(u)?;
        let mut tx = self.begin_write().await?;
        let id = insert_user(&mut tx, u, hash, group_ids).await?;
        let stored = read_user(&mut tx, id).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Saves a user's profile fields and flags (not the password: see
    /// [`Store::set_password`]); group membership is replaced by `group_ids`.
    pub async fn update_user(&self, u: &User) -> Result<()> {
        v::username("username", &u.username)?;
        let mut tx = self.begin_write().await?;
        update_user_in(&mut tx, u).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves a user as [`Store::update_user`] does, with a new password when
    /// one is given (which ends every other way in: the user's sessions and
    /// API tokens but `keep_session` and `keep_token`, the ones making the
    /// change), and the audit record `audit` makes of the account as stored,
    /// all in one transaction.
    pub async fn update_user_audited(
        &self,
        u: &User,
        password: Option<&str>,
        keep_session: Option<&str>,
        keep_token: Option<&str>,
        audit: impl FnOnce(&User) -> AuditEntry,
    ) -> Result<User> {
        v::username("username", &u.username)?;
        // Hashed before the transaction: argon2 takes a while, the write lock must not.
        let hash = match password {
            Some(p) => {
                check_password(p)?;
                Some(hash_password(p)?)
            }
            None => None,
        };
        let mut tx = self.begin_write().await?;
        update_user_in(&mut tx, u).await?;
        if let Some(hash) = hash {
            set_password_in(&mut tx, u.id, &hash).await?;
            end_logins_in(&mut tx, u.id, keep_session, keep_token).await?;
        }
        let stored = read_user(&mut tx, u.id).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Sets a new password (local accounts only: another source's account
    /// has its password checked there).
    pub async fn set_password(&self, user_id: Id, password: &str) -> Result<()> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let mut tx = self.begin_write().await?;
        set_password_in(&mut tx, user_id, &hash).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `password` is the user's password (nothing recorded).
    pub async fn password_matches(&self, user_id: Id, password: &str) -> Result<bool> {
        let sql = "SELECT password_hash FROM users WHERE id = $1";
        let Some(hash) = self.read_row(sql, &[user_id.into()], |r| get_str(r, "password_hash")).await? else {
            return Ok(false);
        };
        let password = password.to_string();
        Ok(tokio::task::spawn_blocking(move || verify_hash(&password, &hash)).await.unwrap_or(false))
    }

    /// Ends a user's sessions and API tokens, but for the session id and the
    /// token given (the ones making a password change); answers how many ended.
    pub async fn end_logins(&self, user_id: Id, keep_session: Option<&str>, keep_token: Option<&str>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let ended = end_logins_in(&mut tx, user_id, keep_session, keep_token).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Checks a login against a local account; answers the (active) user
    /// and records the login time. Accounts of other sources never match.
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>> {
        let sql = "SELECT id, password_hash, is_active FROM users WHERE username = $1 AND auth_source = $2";
        let found = self
            .read_row(sql, &[username.into(), crate::settings::LOCAL_SOURCE.into()], |r| {
                Ok((get_i64(r, "id")?, get_str(r, "password_hash")?, get_bool(r, "is_active")?))
            })
            .await?;
        let Some((id, hash, is_active)) = found else {
            // Spend the same time as a real check, so user names cannot be probed.
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let dummy = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default()).clone();
            verify_bounded(password, dummy).await;
            return Ok(None);
        };
        let hash_ok = verify_bounded(password, hash).await;
        if !hash_ok || !is_active {
            return Ok(None);
        }
        sqlx::query("UPDATE users SET last_login = $1 WHERE id = $2")
            .bind(row::now().timestamp_millis())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_user(id).await
    }

    /// The source an account of this name belongs to (`local` or a plugin
    /// entry's name), if the account exists.
    pub async fn account_source(&self, username: &str) -> Result<Option<String>> {
        self.read_row("SELECT auth_source FROM users WHERE username = $1", &[username.into()], |r| {
            get_str(r, "auth_source")
        })
        .await
    }

    /// Records a login the authentication plugin `source` accepted: creates
    /// the account on its first login (with no usable local password), or
    /// refuses one that belongs to another source; then syncs the
    /// superuser flag, the profile fields the plugin knows and the plugin's
    /// groups (created when missing; memberships this source made and no
    /// longer names are removed, others are left alone), and records the login time.
    pub async fn external_login(
        &self,
        source: &str,
        username: &str,
        identity: &vespene_plugin_api::LoginIdentity,
    ) -> Result<ExternalLogin> {
        if let Err(e) = v::username("username", username) {
            return Ok(ExternalLogin::InvalidName(e.to_string()));
        }
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT id, auth_source, is_active FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let now = row::now().timestamp_millis();
        let (user_id, created) = match existing {
            Some(r) => {
                let owner = get_str(&r, "auth_source")?;
                if owner != source {
                    return Ok(ExternalLogin::OwnedElsewhere(owner));
                }
                if !get_bool(&r, "is_active")? {
                    return Ok(ExternalLogin::Inactive);
                }
                (get_i64(&r, "id")?, false)
            }
            None => {
                // The empty hash matches no password: only the plugin logs it in.
                let r = sqlx::query(
                    "INSERT INTO users (username, password_hash, email, first_name, last_name, is_superuser,
                         is_active, created_at, auth_source)
                     VALUES ($1, '', '', '', '', FALSE, TRUE, $2, $3) RETURNING id",
                )
                .bind(username)
                .bind(now)
                .bind(source)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| row::map_db_err(e, "user", username))?;
                (r.try_get::<i64, _>(0)?, true)
            }
        };
        // Profile fields the plugin does not know keep what an administrator set.
        sqlx::query(
            "UPDATE users SET is_superuser = $1, last_login = $2,
                 email = CASE WHEN $3 = '' THEN email ELSE $3 END,
                 first_name = CASE WHEN $4 = '' THEN first_name ELSE $4 END,
                 last_name = CASE WHEN $5 = '' THEN last_name ELSE $5 END
             WHERE id = $6",
        )
        .bind(identity.superuser)
        .bind(now)
        .bind(identity.email.as_str())
        .bind(identity.first_name.as_str())
        .bind(identity.last_name.as_str())
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let mut skipped_groups = Vec::new();
        let mut named: Vec<i64> = Vec::new();
        for name in &identity.groups {
            if let Err(e) = v::name("name", name) {
                skipped_groups.push(format!("'{name}': {e}"));
                continue;
            }
            sqlx::query("INSERT INTO account_groups (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query("SELECT id FROM account_groups WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            // A membership an administrator made stays theirs.
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, source) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(user_id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
            named.push(id);
        }
        let synced = sqlx::query("SELECT group_id FROM group_members WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(source)
            .fetch_all(&mut *tx)
            .await?;
        for r in synced {
            let group_id: i64 = r.try_get(0)?;
            if !named.contains(&group_id) {
                sqlx::query("DELETE FROM group_members WHERE user_id = $1 AND group_id = $2 AND source = $3")
                    .bind(user_id)
                    .bind(group_id)
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        let user =
            self.get_user(user_id).await?.ok_or(StoreError::NotFound { what: "user", id: user_id.to_string() })?;
        Ok(ExternalLogin::Ready { user, created, skipped_groups })
    }

    /// One user, with group ids.
    pub async fn get_user(&self, id: Id) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE id = $1", User::COLUMNS);
        // The row and the groups at once (on PostgreSQL two pooled
        // connections, one wait; on SQLite both run in place).
        let (found, group_ids) = futures_util::future::try_join(
            self.read_row(&sql, &[id.into()], |r| User::from_row(r)),
            self.user_group_ids(id),
        )
        .await?;
        let Some(mut u) = found else { return Ok(None) };
        u.group_ids = group_ids;
        Ok(Some(u))
    }

    /// One user by name.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>> {
        match self
            .read_row("SELECT id FROM users WHERE username = $1", &[username.into()], |r| get_i64(r, "id"))
            .await?
        {
            Some(id) => self.get_user(id).await,
            None => Ok(None),
        }
    }

    /// Every user, by name (group ids included).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {} FROM users ORDER BY username", User::COLUMNS);
        let mut users = self.read_rows(&sql, &[], |r| User::from_row(r)).await?;
        let links = self
            .read_rows("SELECT user_id, group_id FROM group_members ORDER BY user_id, group_id", &[], |r| {
                Ok((get_i64(r, "user_id")?, get_i64(r, "group_id")?))
            })
            .await?;
        for (u, g) in links {
            if let Some(user) = users.iter_mut().find(|x| x.id == u) {
                user.group_ids.push(g);
            }
        }
        Ok(users)
    }

    /// Deletes a user; objects they created keep existing without a creator.
    pub async fn delete_user(&self, id: Id) -> Result<bool> {
        self.delete_row("users", "user", id, None).await
    }

    /// [`Store::delete_user`] with an audit record, in one transaction.
    pub async fn delete_user_audited(&self, id: Id, audit: &AuditEntry) -> Result<bool> {
        self.delete_row("users", "user", id, Some(audit)).await
    }

    async fn user_group_ids(&self, user_id: Id) -> Result<Vec<Id>> {
        let sql = "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id";
        self.read_rows(sql, &[user_id.into()], |r| get_i64(r, "group_id")).await
    }

    // ---- groups ----

    /// Creates a group.
    pub async fn create_group(&self, name: &str) -> Result<Id> {
        v::name("name", name)?;
        let mut tx = self.begin_write().await?;
        let id = insert_group(&mut tx, name).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates a group and the audit record `audit` makes of it as stored,
    /// in one transaction.
    pub async fn create_group_audited(&self, name: &str, audit: impl FnOnce(&Group) -> AuditEntry) -> Result<Group> {
        v::name("name", name)?;
        let mut tx = self.begin_write().await?;
        let id = insert_group(&mut tx, name).await?;
        let stored = read_group(&mut tx, id).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Renames a group.
    pub async fn rename_group(&self, id: Id, name: &str) -> Result<()> {
        v::name("name", name)?;
        let mut tx = self.begin_write().await?;
        rename_group_in(&mut tx, id, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Renames a group and records the audit record `audit` makes of it as
    /// stored, in one transaction.
    pub async fn rename_group_audited(
        &self,
        id: Id,
        name: &str,
        audit: impl FnOnce(&Group) -> AuditEntry,
    ) -> Result<Group> {
        v::name("name", name)?;
        let mut tx = self.begin_write().await?;
        rename_group_in(&mut tx, id, name).await?;
        let stored = read_group(&mut tx, id).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Every group, by name.
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let sql = format!("SELECT {} FROM account_groups ORDER BY name", Group::COLUMNS);
        self.read_rows(&sql, &[], |r| Group::from_row(r)).await
    }

    /// One group by name.
    pub async fn find_group(&self, name: &str) -> Result<Option<Group>> {
        Ok(self.list_groups().await?.into_iter().find(|g| g.name == name))
    }

    /// Deletes a group (and its memberships and ownerships).
    pub async fn delete_group(&self, id: Id) -> Result<bool> {
        self.delete_row("account_groups", "group", id, None).await
    }

    /// [`Store::delete_group`] with an audit record, in one transaction.
    pub async fn delete_group_audited(&self, id: Id, audit: &AuditEntry) -> Result<bool> {
        self.delete_row("account_groups", "group", id, Some(audit)).await
    }

    /// Adds a user to a group (no error if already a member).
    pub async fn add_group_member(&self, group_id: Id, user_id: Id) -> Result<()> {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(group_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|e| row::map_db_err(e, "group member", &user_id.to_string()))?;
        Ok(())
    }

    /// Removes a user from a group.
    pub async fn remove_group_member(&self, group_id: Id, user_id: Id) -> Result<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user ids in a group.
    pub async fn group_member_ids(&self, group_id: Id) -> Result<Vec<Id>> {
        let sql = "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY user_id";
        self.read_rows(sql, &[group_id.into()], |r| get_i64(r, "user_id")).await
    }

    // ---- API tokens ----

    /// Creates an API token for a user; answers its row and the token itself,
    /// which is not stored and cannot be shown again.
    pub async fn create_api_token(&self, user_id: Id, name: &str, ttl: Option<Duration>) -> Result<(ApiToken, String)> {
        insert_api_token(&self.pool, user_id, name, ttl).await
    }

    /// [`Store::create_api_token`] with the audit record `audit` makes of
    /// the token, in one transaction.
    pub async fn create_api_token_audited(
        &self,
        user_id: Id,
        name: &str,
        ttl: Option<Duration>,
        audit: impl FnOnce(&ApiToken) -> AuditEntry,
    ) -> Result<(ApiToken, String)> {
        let mut tx = self.begin_write().await?;
        let (token, secret) = insert_api_token(&mut *tx, user_id, name, ttl).await?;
        audit(&token).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok((token, secret))
    }

    /// The active user a token belongs to, if the token is valid, with
    /// every group as read in the same query (what authorization names
    /// groups by); records the token's use.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<(User, Vec<Group>)>> {
        let now = row::now().timestamp_millis();
        let hash = sha256_hex(token);
        // The token, its user, the user's groups and the group directory in
        // one query, written once per backend (every request makes it).
        static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
            let columns = User::COLUMNS.split(", ").map(|c| format!("users.{c}")).collect::<Vec<_>>().join(", ");
            // JSON aggregates are the one thing the two dialects spell differently.
            let directory = [
                "json_group_array(json_array(id, name, created_at) ORDER BY name)",
                "COALESCE(json_agg(json_build_array(id, name, created_at) ORDER BY name), '[]')::text",
            ];
            directory.map(|all_groups| {
                format!(
                    "SELECT {columns}, token.last_used_at AS token_used_at,
                     (SELECT string_agg(CAST(group_id AS TEXT), ',' ORDER BY group_id) FROM group_members
                      WHERE group_members.user_id = users.id) AS member_of,
                     (SELECT {all_groups} FROM account_groups) AS group_directory
                     FROM (SELECT user_id, last_used_at FROM api_tokens
                           WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > $2)) token
                     JOIN users ON users.id = token.user_id"
                )
            })
        });
        let sql = &SQL[usize::from(self.backend != Backend::Sqlite)];
        let found = self
            .read_row(sql, &[hash.as_str().into(), now.into()], |r| {
                let mut user = User::from_row(r)?;
                user.group_ids = row::get_id_list(r, "member_of")?;
                Ok((user, row::get_opt_i64(r, "token_used_at")?, row::get_str(r, "group_directory")?))
            })
            .await?;
        let Some((user, last_used, directory)) = found else {
            return Ok(None);
        };
        // Kept to the minute: a write on every request would make each read
        // of the API wait for a commit.
        if last_used.is_none_or(|at| now - at >= TOKEN_USE_GRANULARITY_MS) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(hash.as_str())
                .execute(&self.pool)
                .await?;
        }
        if !user.is_active {
            return Ok(None);
        }
        let entries: Vec<(Id, String, Option<i64>)> = serde_json::from_str(&directory)
            .map_err(|e| sqlx::Error::ColumnDecode { index: "group_directory".into(), source: Box::new(e) })?;
        let groups = entries
            .into_iter()
            .map(|(id, name, created_at)| Group { id, name, created_at: created_at.map(row::from_millis) })
            .collect();
        Ok(Some((user, groups)))
    }

    /// A user's tokens (without the secret part).
    pub async fn list_api_tokens(&self, user_id: Id) -> Result<Vec<ApiToken>> {
        let sql = "SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY id";
        self.read_rows(sql, &[user_id.into()], |r| ApiToken::from_row(r)).await
    }

    /// Revokes a token.
    pub async fn delete_api_token(&self, id: Id) -> Result<bool> {
        self.delete_row("api_tokens", "api token", id, None).await
    }

    /// [`Store::delete_api_token`] with an audit record, in one transaction.
    pub async fn delete_api_token_audited(&self, id: Id, audit: &AuditEntry) -> Result<bool> {
        self.delete_row("api_tokens", "api token", id, Some(audit)).await
    }

    // ---- sessions ----

    /// Starts a login session; answers the session id for the cookie.
    pub async fn create_session(&self, user_id: Id, ttl: Duration) -> Result<String> {
        self.create_session_audited(user_id, ttl, None).await
    }

    /// [`Store::create_session`], recording the login `audit` in the same transaction.
    pub async fn create_session_audited(
        &self,
        user_id: Id,
        ttl: Duration,
        audit: Option<&AuditEntry>,
    ) -> Result<String> {
        let sid = random_token();
        let now = row::now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $3)",
        )
        .bind(sha256_hex(&sid))
        .bind(user_id)
        .bind(now.timestamp_millis())
        .bind((now + ttl).timestamp_millis())
        .execute(&mut *tx)
        .await?;
        if let Some(audit) = audit {
            audit.insert(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(sid)
    }

    /// The active user of an unexpired session; records that it was seen.
    pub async fn session_user(&self, sid: &str) -> Result<Option<User>> {
        let now = row::now().timestamp_millis();
        let r = sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2 AND expires_at > $1 RETURNING user_id",
        )
        .bind(now)
        .bind(sha256_hex(sid))
        .fetch_optional(&self.pool)
        .await?;
        match r {
            Some(r) => Ok(self.get_user(r.try_get::<i64, _>(0)?).await?.filter(|u| u.is_active)),
            None => Ok(None),
        }
    }

    /// Ends a session (logout).
    pub async fn delete_session(&self, sid: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(sha256_hex(sid)).execute(&self.pool).await?;
        Ok(())
    }

    /// Records a webhook delivery id; `false` when it was recorded before (a
    /// replay). Atomic on both backends, so two processes cannot both accept it.
    pub async fn record_webhook_delivery(&self, delivery_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(delivery_id)
        .bind(row::now().timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes expired sessions; answers how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(row::now().timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The password hash of a new local account, once its name and password pass.
fn checked_new_user(u: &NewUser) -> Result<String> {
    v::username("username", &u.username)?;
    check_password(&u.password)?;
    hash_password(&u.password)
}

async fn insert_user(tx: &mut Tx, u: &NewUser, hash: String, group_ids: &[Id]) -> Result<Id> {
    let r = sqlx::query(
        "INSERT INTO users (username, password_hash, email, first_name, last_name, is_superuser, is_active, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING id",
    )
    .bind(u.username.as_str())
    .bind(hash)
    .bind(u.email.as_str())
    .bind(u.first_name.as_str())
    .bind(u.last_name.as_str())
    .bind(u.is_superuser)
    .bind(row::now().timestamp_millis())
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| row::map_db_err(e, "user", &u.username))?;
    let id = r.try_get::<i64, _>(0)?;
    for g in group_ids {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(*g)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(|_| ValidationError::new("group_ids", format!("group {g} does not exist")))?;
    }
    Ok(id)
}

/// A user and their groups as they are in this transaction.
async fn read_user(tx: &mut Tx, id: Id) -> Result<User> {
    let sql = format!("SELECT {} FROM users WHERE id = $1", User::COLUMNS);
    let r = sqlx::query(&sql).bind(id).fetch_one(&mut **tx).await?;
    let mut user = User::from_row(&r)?;
    user.group_ids = sqlx::query("SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<std::result::Result<Vec<i64>, _>>()?;
    Ok(user)
}

async fn update_user_in(tx: &mut Tx, u: &User) -> Result<()> {
    let done = sqlx::query(
        "UPDATE users SET username = $1, email = $2, first_name = $3, last_name = $4, is_superuser = $5,
             is_active = $6 WHERE id = $7",
    )
    .bind(u.username.as_str())
    .bind(u.email.as_str())
    .bind(u.first_name.as_str())
    .bind(u.last_name.as_str())
    .bind(u.is_superuser)
    .bind(u.is_active)
    .bind(u.id)
    .execute(&mut **tx)
    .await
    .map_err(|e| row::map_db_err(e, "user", &u.username))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "user", id: u.id.to_string() });
    }
    // Memberships that stay keep their source (an authentication
    // plugin's sync must still recognise the ones it made).
    let current = sqlx::query("SELECT group_id FROM group_members WHERE user_id = $1")
        .bind(u.id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<std::result::Result<Vec<i64>, _>>()?;
    for g in current.iter().filter(|g| !u.group_ids.contains(g)) {
        sqlx::query("DELETE FROM group_members WHERE user_id = $1 AND group_id = $2")
            .bind(u.id)
            .bind(*g)
            .execute(&mut **tx)
            .await?;
    }
    for g in u.group_ids.iter().filter(|g| !current.contains(g)) {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(*g)
            .bind(u.id)
            .execute(&mut **tx)
            .await
            .map_err(|_| ValidationError::new("group_ids", format!("group {g} does not exist")))?;
    }
    Ok(())
}

/// Sets a local account's password hash; another source's account has its
/// password checked there and is refused.
async fn set_password_in(tx: &mut Tx, user_id: Id, hash: &str) -> Result<()> {
    let source = sqlx::query("SELECT auth_source FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| get_str(&r, "auth_source"))
        .transpose()?;
    let Some(source) = source else {
        return Err(StoreError::NotFound { what: "user", id: user_id.to_string() });
    };
    if source != crate::settings::LOCAL_SOURCE {
        return Err(ValidationError::new(
            "password",
            format!("this account's password is checked by the authentication source '{source}', not by Vespene"),
        )
        .into());
    }
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn end_logins_in(tx: &mut Tx, user_id: Id, keep_session: Option<&str>, keep_token: Option<&str>) -> Result<u64> {
    let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
        .bind(user_id)
        .bind(keep_session.map(sha256_hex).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    let tokens = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND token_hash <> $2")
        .bind(user_id)
        .bind(keep_token.map(sha256_hex).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    Ok(sessions.rows_affected() + tokens.rows_affected())
}

async fn insert_group(tx: &mut Tx, name: &str) -> Result<Id> {
    let r = sqlx::query("INSERT INTO account_groups (name, created_at) VALUES ($1, $2) RETURNING id")
        .bind(name)
        .bind(row::now().timestamp_millis())
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| row::map_db_err(e, "group", name))?;
    Ok(r.try_get::<i64, _>(0)?)
}

async fn rename_group_in(tx: &mut Tx, id: Id, name: &str) -> Result<()> {
    let done = sqlx::query("UPDATE account_groups SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(|e| row::map_db_err(e, "group", name))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "group", id: id.to_string() });
    }
    Ok(())
}

async fn read_group(tx: &mut Tx, id: Id) -> Result<Group> {
    let sql = format!("SELECT {} FROM account_groups WHERE id = $1", Group::COLUMNS);
    Group::from_row(&sqlx::query(&sql).bind(id).fetch_one(&mut **tx).await?)
}

/// A new API token of `user_id`: its record, and the token, shown this once
/// (only its hash is kept).
async fn insert_api_token<'e, E>(
    executor: E,
    user_id: Id,
    name: &str,
    ttl: Option<Duration>,
) -> Result<(ApiToken, String)>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let token = format!("vsp_{}", random_token());
    let prefix: String = token.chars().take(10).collect();
    let now = row::now();
    let expires = ttl.map(|d| now + d);
    let r = sqlx::query(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(sha256_hex(&token))
    .bind(prefix.as_str())
    .bind(now.timestamp_millis())
    .bind(expires.map(|t| t.timestamp_millis()))
    .fetch_one(executor)
    .await
    .map_err(|e| row::map_db_err(e, "api token", name))?;
    let t = ApiToken {
        id: r.try_get(0)?,
        user_id,
        name: name.to_string(),
        prefix,
        created_at: now,
        last_used_at: None,
        expires_at: expires,
    };
    Ok((t, token))
}
