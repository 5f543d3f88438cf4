//! CRUD for the configuration objects: projects, pipelines, stages, worker
//! pools, variable sets, snippets, SSH keys, service logins, organizations,
//! and worker registration.
//!
//! Each type's columns are its fields (`#[derive(FromRow, ToColumns)]` in
//! [`models`]); its table, checks, references and link tables are its
//! `Record` impl here, a link table naming its field once (`link!`). One
//! generic create/update/get/list/delete does the rest, so every type gets
//! the same guarantees: validation before writing, references checked with
//! errors that name the field, the row and its links written in one
//! transaction, and secrets encrypted on the way in and masked on the way
//! out.

use std::collections::HashMap;

use sqlx::{Any, Row};

use super::row::{self, bind, get_opt_str, Cols, FromRow, ToColumns, Val};
use super::secret_vars;
use super::validate::{self as v, ValidationError};
use super::*;

/// A many-to-many link table owned by a record, and the id-list field of
/// the record it fills.
pub(crate) struct Link<T> {
    /// The link table.
    table: &'static str,
    /// Column holding the owner's id.
    owner_col: &'static str,
    /// Column holding the target's id.
    target_col: &'static str,
    /// The field, also named in validation errors.
    field: &'static str,
    /// The table the targets live in.
    target_table: &'static str,
    /// The field's ids.
    get: fn(&T) -> &[Id],
    /// Sets the field's ids.
    set: fn(&mut T, Vec<Id>),
}

/// `link!(field: "table" ("owner_col" -> "target_col") of "target_table")`, in
/// a `Record` impl: the field is named once, for its value and for its
/// validation errors.
macro_rules! link {
    ($field:ident: $table:literal ($owner:literal -> $target:literal) of $targets:literal) => {
        Link::<Self> {
            table: $table,
            owner_col: $owner,
            target_col: $target,
            field: stringify!($field),
            target_table: $targets,
            get: |o| &o.$field,
            set: |o, ids| o.$field = ids,
        }
    };
}

/// How a stored type maps to its table. Its columns, read and written, are
/// derived from its fields (`#[derive(FromRow, ToColumns)]` in [`models`],
/// see `vespene-store-derive`); what is written here is the logic: checks,
/// references, link tables.
pub(crate) trait Record: FromRow + ToColumns + Send + Unpin + 'static {
    const TABLE: &'static str;
    const WHAT: &'static str;
    const LINKS: &'static [Link<Self>] = &[];
    /// Whether the table has a `created_at` column filled on create.
    const CREATED_AT: bool = true;
    fn id(&self) -> Id;
    fn name(&self) -> &str;
    fn validate(&self) -> Result<(), ValidationError>;
    /// Checks that depend on settings (the store's [`v::SavePolicy`]).
    fn validate_policy(&self, _policy: &v::SavePolicy) -> Result<(), ValidationError> {
        Ok(())
    }
    /// What a name stands for beyond itself, when two different names can
    /// stand for the same thing (snippets: the variable they are injected as).
    fn name_key(_name: &str) -> Option<String> {
        None
    }
    /// Single-row references: (field, table, id).
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![]
    }
}

impl Store {
    pub(crate) async fn create_record<T: Record>(&self, obj: &T) -> Result<Id> {
        let cols = self.columns_to_write(obj, true)?;
        let mut tx = self.begin_write().await?;
        let id = self.insert_record(&mut tx, obj, cols).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn update_record<T: Record>(&self, obj: &T) -> Result<()> {
        let cols = self.columns_to_write(obj, false)?;
        let mut tx = self.begin_write().await?;
        self.overwrite_record(&mut tx, obj, cols).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a record and the audit record `audit` makes of it as stored,
    /// in one transaction; answers the record as stored.
    pub(crate) async fn create_record_audited<T: Record>(
        &self,
        obj: &T,
        audit: impl FnOnce(&T) -> AuditEntry,
    ) -> Result<T> {
        let cols = self.columns_to_write(obj, true)?;
        let mut tx = self.begin_write().await?;
        let id = self.insert_record(&mut tx, obj, cols).await?;
        let stored = read_record::<T>(&mut tx, id).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Saves a record and the audit record `audit` makes of it as stored, in
    /// one transaction; answers the record as stored.
    pub(crate) async fn update_record_audited<T: Record>(
        &self,
        obj: &T,
        audit: impl FnOnce(&T) -> AuditEntry,
    ) -> Result<T> {
        let cols = self.columns_to_write(obj, false)?;
        let mut tx = self.begin_write().await?;
        self.overwrite_record(&mut tx, obj, cols).await?;
        let stored = read_record::<T>(&mut tx, obj.id()).await?;
        audit(&stored).insert(&mut *tx).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The checked columns of a record to write (with `created_at` for a new one).
    fn columns_to_write<T: Record>(&self, obj: &T, new: bool) -> Result<Cols> {
        obj.validate()?;
        obj.validate_policy(&self.policy)?;
        let mut cols = obj.columns(&*self.secrets)?;
        if new && T::CREATED_AT {
            cols.push(("created_at", row::now().into()));
        }
        Ok(cols)
    }

    async fn insert_record<T: Record>(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        obj: &T,
        mut cols: Cols,
    ) -> Result<Id> {
        check_refs(tx, obj).await?;
        self.seal_variables::<T>(tx, &mut cols, None).await?;
        let sql = row::insert_sql(T::TABLE, &cols);
        let mut q = sqlx::query(&sql);
        for (_, val) in cols {
            q = bind(q, val);
        }
        let id: Id = q.fetch_one(&mut **tx).await.map_err(|e| row::map_db_err(e, T::WHAT, obj.name()))?.try_get(0)?;
        write_links(tx, obj, id).await?;
        Ok(id)
    }

    async fn overwrite_record<T: Record>(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        obj: &T,
        mut cols: Cols,
    ) -> Result<()> {
        check_refs(tx, obj).await?;
        self.seal_variables::<T>(tx, &mut cols, Some(obj.id())).await?;
        let sql = row::update_sql(T::TABLE, &cols);
        let mut q = sqlx::query(&sql);
        for (_, val) in cols {
            q = bind(q, val);
        }
        let done = q.bind(obj.id()).execute(&mut **tx).await.map_err(|e| row::map_db_err(e, T::WHAT, obj.name()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: T::WHAT, id: obj.id().to_string() });
        }
        write_links(tx, obj, obj.id()).await
    }

    /// Encrypts new secret variables of a `variables` column and puts the
    /// stored value back where the input says `"********"` (the row `id` as it
    /// is in this transaction).
    async fn seal_variables<T: Record>(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        cols: &mut Cols,
        id: Option<Id>,
    ) -> Result<()> {
        let Some((_, Val::Text(Some(input)))) = cols.iter_mut().find(|(n, _)| *n == "variables") else {
            return Ok(());
        };
        let stored: Option<String> = match id {
            Some(id) => {
                let sql = format!("SELECT variables FROM {} WHERE id = $1", T::TABLE);
                sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?.map(|r| r.try_get(0)).transpose()?
            }
            None => None,
        };
        *input = secret_vars::seal(input, stored.as_deref(), &*self.secrets, "variables")?;
        Ok(())
    }

    /// The `variables` column of a row as stored (secret values encrypted),
    /// for the build engine; `None` when the row does not exist.
    pub async fn sealed_variables(&self, table: &str, id: Id) -> Result<Option<String>> {
        if !secret_vars::TABLES.contains(&table) {
            return Err(StoreError::Config(format!("{table} has no variables")));
        }
        let sql = format!("SELECT variables FROM {table} WHERE id = $1");
        self.read_row(&sql, &[id.into()], |r| row::get_str(r, "variables")).await
    }

    pub(crate) async fn get_record<T: Record>(&self, id: Id) -> Result<Option<T>> {
        let sql = format!("SELECT * FROM {} WHERE id = $1", T::TABLE);
        // The row and its links at once: on PostgreSQL two pooled
        // connections, one round trip of latency; on SQLite both run in place.
        let (found, mut links) = futures_util::future::try_join(
            self.read_row(&sql, &[id.into()], |r| T::from_row(r)),
            self.links::<T>(Some(id)),
        )
        .await?;
        let Some(mut obj) = found else {
            return Ok(None);
        };
        set_links(&mut obj, &mut links);
        Ok(Some(obj))
    }

    pub(crate) async fn find_record<T: Record>(&self, name: &str) -> Result<Option<T>> {
        let sql = format!("SELECT id FROM {} WHERE name = $1", T::TABLE);
        match self.read_row(&sql, &[name.into()], |r| row::get_i64(r, "id")).await? {
            Some(id) => self.get_record(id).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn list_records<T: Record>(&self) -> Result<Vec<T>> {
        let sql = format!("SELECT * FROM {} ORDER BY name, id", T::TABLE);
        let (mut out, mut links) =
            futures_util::future::try_join(self.read_rows(&sql, &[], |r| T::from_row(r)), self.links::<T>(None))
                .await?;
        for obj in &mut out {
            set_links(obj, &mut links);
        }
        Ok(out)
    }

    pub(crate) async fn delete_record<T: Record>(&self, id: Id) -> Result<bool> {
        self.delete_row(T::TABLE, T::WHAT, id, None).await
    }

    /// Deletes row `id` of `table` (a `what`) and, if it was there, records
    /// `audit` in the same transaction. A row still referenced is refused,
    /// naming it.
    pub(crate) async fn delete_row(&self, table: &str, what: &str, id: Id, audit: Option<&AuditEntry>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let sql = format!("DELETE FROM {table} WHERE id = $1");
        let done = sqlx::query(&sql).bind(id).execute(&mut *tx).await.map_err(|e| match e {
            sqlx::Error::Database(db) if row::is_fk_violation(db.as_ref()) => {
                StoreError::Reference(format!("{what} {id} is still in use and cannot be deleted"))
            }
            e => StoreError::Db(e),
        })?;
        let deleted = done.rows_affected() > 0;
        if let (true, Some(audit)) = (deleted, audit) {
            audit.insert(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

/// A record and its links as they are in this transaction.
async fn read_record<T: Record>(tx: &mut sqlx::Transaction<'_, Any>, id: Id) -> Result<T> {
    let sql = format!("SELECT * FROM {} WHERE id = $1", T::TABLE);
    let r = sqlx::query(&sql).bind(id).fetch_one(&mut **tx).await?;
    let mut obj = T::from_row(&r)?;
    let mut links = read_links::<T>(tx, id).await?;
    set_links(&mut obj, &mut links);
    Ok(obj)
}

/// The link ids of every link table of `T`, by link (in `T::LINKS` order)
/// and then by owner.
type Links = Vec<HashMap<Id, Vec<Id>>>;

/// The query for [`Links`] of one owner (`$1`), or of all: one query, a
/// `UNION ALL` over the link tables, whatever their number. `None` when `T`
/// has no links.
fn links_sql<T: Record>(one_owner: bool) -> Option<String> {
    if T::LINKS.is_empty() {
        return None;
    }
    let sql = T::LINKS
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (o, t, tb) = (l.owner_col, l.target_col, l.table);
            let filter = if one_owner { format!(" WHERE {o} = $1") } else { String::new() };
            format!("SELECT CAST({i} AS BIGINT) AS link, {o} AS owner, {t} AS target, position FROM {tb}{filter}")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    Some(format!("{sql} ORDER BY 1, 2, 4, 3"))
}

/// Files one row of [`links_sql`]'s answer.
fn add_link<R: row::RowRead + ?Sized>(links: &mut Links, r: &R) -> Result<()> {
    // `link` is the query's own literal index into `T::LINKS`.
    if let Some(slot) = usize::try_from(row::get_i64(r, "link")?).ok().and_then(|i| links.get_mut(i)) {
        slot.entry(row::get_i64(r, "owner")?).or_default().push(row::get_i64(r, "target")?);
    }
    Ok(())
}

/// The links of one owner as they are in this transaction.
async fn read_links<T: Record>(tx: &mut sqlx::Transaction<'_, Any>, owner: Id) -> Result<Links> {
    let mut links = vec![HashMap::new(); T::LINKS.len()];
    if let Some(sql) = links_sql::<T>(true) {
        for r in sqlx::query(&sql).bind(owner).fetch_all(&mut **tx).await? {
            add_link(&mut links, &r)?;
        }
    }
    Ok(links)
}

impl Store {
    /// The links of one owner, or of all.
    async fn links<T: Record>(&self, owner: Option<Id>) -> Result<Links> {
        let mut links = vec![HashMap::new(); T::LINKS.len()];
        if let Some(sql) = links_sql::<T>(owner.is_some()) {
            let args: Vec<Val> = owner.into_iter().map(Val::from).collect();
            self.read_rows(&sql, &args, |r| add_link(&mut links, r)).await?;
        }
        Ok(links)
    }
}

/// Moves `obj`'s link ids out of its [`Links`] into its fields.
fn set_links<T: Record>(obj: &mut T, links: &mut Links) {
    for (l, by_owner) in T::LINKS.iter().zip(links) {
        (l.set)(obj, by_owner.remove(&obj.id()).unwrap_or_default());
    }
}

async fn exists(conn: &mut sqlx::AnyConnection, table: &str, id: Id) -> Result<bool> {
    let sql = format!("SELECT 1 FROM {table} WHERE id = $1");
    Ok(sqlx::query(&sql).bind(id).fetch_optional(conn).await?.is_some())
}

async fn check_refs<T: Record>(tx: &mut sqlx::Transaction<'_, Any>, obj: &T) -> Result<()> {
    if let Some(key) = T::name_key(obj.name()) {
        let sql = format!("SELECT name FROM {} WHERE id <> $1", T::TABLE);
        for r in sqlx::query(&sql).bind(obj.id()).fetch_all(&mut **tx).await? {
            let other: String = r.try_get("name")?;
            // The same name is the unique index's to refuse, as for every record.
            if other != obj.name() && T::name_key(&other).as_deref() == Some(key.as_str()) {
                let message =
                    format!("'{}' and the {} '{other}' would both be the variable '{key}'", obj.name(), T::WHAT);
                return Err(ValidationError::new("name", message).into());
            }
        }
    }
    for (field, table, id) in obj.refs() {
        if let Some(id) = id {
            if !exists(tx, table, id).await? {
                return Err(ValidationError::new(field, format!("{id} does not exist")).into());
            }
        }
    }
    for l in T::LINKS {
        for id in (l.get)(obj) {
            if !exists(tx, l.target_table, *id).await? {
                return Err(ValidationError::new(l.field, format!("{id} does not exist")).into());
            }
        }
    }
    Ok(())
}

async fn write_links<T: Record>(tx: &mut sqlx::Transaction<'_, Any>, obj: &T, id: Id) -> Result<()> {
    for l in T::LINKS {
        row::set_links(tx, l.table, l.owner_col, l.target_col, id, (l.get)(obj)).await?;
    }
    Ok(())
}

/// Typed public wrappers over the generic record functions.
macro_rules! crud {
    ($t:ty, $create:ident, $update:ident, $get:ident, $find:ident, $list:ident, $delete:ident) => {
        impl Store {
            #[doc = concat!("Validates and saves a new ", stringify!($t), "; answers its id.")]
            pub async fn $create(&self, obj: &$t) -> Result<Id> {
                self.create_record(obj).await
            }
            #[doc = concat!("Validates and saves changes to a ", stringify!($t), " (by id).")]
            pub async fn $update(&self, obj: &$t) -> Result<()> {
                self.update_record(obj).await
            }
            #[doc = concat!("One ", stringify!($t), " by id.")]
            pub async fn $get(&self, id: Id) -> Result<Option<$t>> {
                self.get_record(id).await
            }
            #[doc = concat!("One ", stringify!($t), " by name.")]
            pub async fn $find(&self, name: &str) -> Result<Option<$t>> {
                self.find_record(name).await
            }
            #[doc = concat!("Every ", stringify!($t), ", by name.")]
            pub async fn $list(&self) -> Result<Vec<$t>> {
                self.list_records().await
            }
            #[doc = concat!("Deletes a ", stringify!($t), "; false when it did not exist.")]
            pub async fn $delete(&self, id: Id) -> Result<bool> {
                self.delete_record::<$t>(id).await
            }
        }
    };
}

crud!(Project, create_project, update_project, get_project, find_project, list_projects, delete_project);
crud!(Pipeline, create_pipeline, update_pipeline, get_pipeline, find_pipeline, list_pipelines, delete_pipeline);
crud!(Stage, create_stage, update_stage, get_stage, find_stage, list_stages, delete_stage);
crud!(
    WorkerPool,
    create_worker_pool,
    update_worker_pool,
    get_worker_pool,
    find_worker_pool,
    list_worker_pools,
    delete_worker_pool
);
crud!(
    VariableSet,
    create_variable_set,
    update_variable_set,
    get_variable_set,
    find_variable_set,
    list_variable_sets,
    delete_variable_set
);
crud!(Snippet, create_snippet, update_snippet, get_snippet, find_snippet, list_snippets, delete_snippet);
crud!(SshKey, create_ssh_key, update_ssh_key, get_ssh_key, find_ssh_key, list_ssh_keys, delete_ssh_key);
crud!(
    ServiceLogin,
    create_service_login,
    update_service_login,
    get_service_login,
    find_service_login,
    list_service_logins,
    delete_service_login
);
crud!(
    Organization,
    create_organization,
    update_organization,
    get_organization,
    find_organization,
    list_organizations,
    delete_organization
);

/// A build's `secret_values` map (placeholder to encrypted value) re-encrypted.
fn reseal_map(stored: &str, old: &dyn SecretCipher, new: &dyn SecretCipher, what: &str) -> Result<Option<String>> {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(stored) else {
        return Ok(None);
    };
    for v in map.values_mut() {
        if let Some(s) = v.as_str() {
            let plain = old
                .decrypt(s)
                .map_err(|e| StoreError::Config(format!("{what} cannot be decrypted with the current key: {e}")))?;
            *v = serde_json::Value::String(new.encrypt(&plain)?);
        }
    }
    Ok((!map.is_empty()).then(|| serde_json::Value::Object(map).to_string()))
}

/// Clear-text secrets, for the engine only.
#[derive(Clone, PartialEq, Eq)]
pub struct SshKeySecrets {
    /// The private key.
    pub private_key: Option<String>,
    /// Its passphrase.
    pub unlock_password: Option<String>,
}

impl std::fmt::Debug for SshKeySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SshKeySecrets(..)")
    }
}

impl Store {
    /// The clear text of an SSH key and its unlock password. Only the build
    /// engine calls this, right before use; nothing lists it.
    pub async fn reveal_ssh_key(&self, id: Id) -> Result<SshKeySecrets> {
        let sql = "SELECT private_key, unlock_password FROM ssh_keys WHERE id = $1";
        let (key, password) = self
            .read_row(sql, &[id.into()], |r| Ok((get_opt_str(r, "private_key")?, get_opt_str(r, "unlock_password")?)))
            .await?
            .ok_or(StoreError::NotFound { what: "ssh key", id: id.to_string() })?;
        Ok(SshKeySecrets { private_key: self.reveal(key)?, unlock_password: self.reveal(password)? })
    }

    /// Re-encrypts every stored secret (SSH keys, their unlock passwords,
    /// service-login passwords) from this store's key to `new`, in one
    /// transaction; answers how many values changed. A value the current key
    /// cannot decrypt stops it with nothing changed.
    pub async fn reencrypt_secrets(&self, new: &dyn SecretCipher) -> Result<usize> {
        const COLUMNS: [(&str, &str); 4] = [
            ("ssh_keys", "private_key"),
            ("ssh_keys", "unlock_password"),
            ("service_logins", "password"),
            ("projects", "webhook_token"),
        ];
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for (table, column) in COLUMNS {
            let select = format!("SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} <> ''");
            for r in sqlx::query(&select).fetch_all(&mut *tx).await? {
                let id: Id = r.try_get("id")?;
                let stored: String = r.try_get(column)?;
                let plain = self.secrets.decrypt(&stored).map_err(|e| {
                    StoreError::Config(format!(
                        "{table}.{column} of id {id} cannot be decrypted with the current key: {e}"
                    ))
                })?;
                let update = format!("UPDATE {table} SET {column} = $1 WHERE id = $2");
                sqlx::query(&update).bind(new.encrypt(&plain)?).bind(id).execute(&mut *tx).await?;
                changed += 1;
            }
        }
        // Secret variables, and the values frozen with builds.
        let json_columns = secret_vars::TABLES.iter().map(|t| (*t, "variables")).chain([("builds", "secret_values")]);
        for (table, column) in json_columns {
            let select = format!("SELECT id, {column} FROM {table} WHERE {column} LIKE '%$VESPENE$%'");
            for r in sqlx::query(&select).fetch_all(&mut *tx).await? {
                let id: Id = r.try_get("id")?;
                let stored: String = r.try_get(column)?;
                let what = format!("{table}.{column} of id {id}");
                let resealed = if column == "secret_values" {
                    reseal_map(&stored, &*self.secrets, new, &what)?
                } else {
                    secret_vars::reseal(&stored, &*self.secrets, new, &what)?
                };
                if let Some(resealed) = resealed {
                    let update = format!("UPDATE {table} SET {column} = $1 WHERE id = $2");
                    sqlx::query(&update).bind(resealed).bind(id).execute(&mut *tx).await?;
                    changed += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Encrypts secret values stored in clear by an older version: webhook
    /// tokens, and `{"secret": ...}` variables written before they were secret.
    pub(crate) async fn seal_plaintext_secrets(&self) -> Result<()> {
        let rows = sqlx::query(
            "SELECT id, webhook_token FROM projects WHERE webhook_token IS NOT NULL AND webhook_token <> ''
             AND webhook_token NOT LIKE '$VESPENE$%'",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let (id, token): (Id, String) = (r.try_get("id")?, r.try_get("webhook_token")?);
            sqlx::query("UPDATE projects SET webhook_token = $1 WHERE id = $2 AND webhook_token = $3")
                .bind(self.secrets.encrypt(&token)?)
                .bind(id)
                .bind(token)
                .execute(&self.pool)
                .await?;
        }
        for table in secret_vars::TABLES {
            let select = format!("SELECT id, variables FROM {table} WHERE variables LIKE '%\"secret\"%'");
            for r in sqlx::query(&select).fetch_all(&self.pool).await? {
                let (id, stored): (Id, String) = (r.try_get("id")?, r.try_get("variables")?);
                if let Some(sealed) = secret_vars::seal_plaintext(&stored, &*self.secrets)? {
                    let update = format!("UPDATE {table} SET variables = $1 WHERE id = $2 AND variables = $3");
                    sqlx::query(&update).bind(sealed).bind(id).bind(stored).execute(&self.pool).await?;
                }
            }
        }
        Ok(())
    }

    /// The clear-text webhook token of a project (webhooks and the engine only).
    pub async fn reveal_webhook_token(&self, project_id: Id) -> Result<Option<String>> {
        let sql = "SELECT webhook_token FROM projects WHERE id = $1";
        let sealed = self.read_row(sql, &[project_id.into()], |r| get_opt_str(r, "webhook_token")).await?;
        self.reveal(sealed.ok_or(StoreError::NotFound { what: "project", id: project_id.to_string() })?)
    }

    /// The clear-text password of a service login (engine only).
    pub async fn reveal_service_login_password(&self, id: Id) -> Result<Option<String>> {
        let sql = "SELECT password FROM service_logins WHERE id = $1";
        let sealed = self.read_row(sql, &[id.into()], |r| get_opt_str(r, "password")).await?;
        self.reveal(sealed.ok_or(StoreError::NotFound { what: "service login", id: id.to_string() })?)
    }

    /// The clear text of a sealed column's value; none when it is empty.
    /// Decrypted after the read, not during it: the secrets chain may ask a
    /// plugin, or a command, and no statement stays open meanwhile.
    fn reveal(&self, sealed: Option<String>) -> Result<Option<String>> {
        match sealed {
            Some(s) if !s.is_empty() => Ok(Some(self.secrets.decrypt(&s)?)),
            _ => Ok(None),
        }
    }

    /// Registers a worker, or refreshes its check-in (by `worker_uid`).
    pub async fn upsert_worker(&self, w: &Worker) -> Result<Id> {
        v::name("worker_uid", &w.worker_uid)?;
        let now = row::now().timestamp_millis();
        let r = sqlx::query(
            "INSERT INTO workers (worker_uid, hostname, port, build_root, first_checkin, last_checkin, fileserving_enabled,
                 pools)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
             ON CONFLICT (worker_uid) DO UPDATE SET hostname = excluded.hostname, port = excluded.port,
                 build_root = excluded.build_root, last_checkin = excluded.last_checkin,
                 fileserving_enabled = excluded.fileserving_enabled, pools = excluded.pools
             RETURNING id",
        )
        .bind(w.worker_uid.as_str())
        .bind(w.hostname.as_str())
        .bind(w.port)
        .bind(w.build_root.as_str())
        .bind(now)
        .bind(w.fileserving_enabled)
        .bind(super::autoscaling::encode_pools(&w.pools))
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<i64, _>(0)?)
    }

    /// One worker by id.
    pub async fn get_worker(&self, id: Id) -> Result<Option<Worker>> {
        self.read_row("SELECT * FROM workers WHERE id = $1", &[id.into()], |r| Worker::from_row(r)).await
    }

    /// Every worker, by uid.
    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        self.read_rows("SELECT * FROM workers ORDER BY worker_uid", &[], |r| Worker::from_row(r)).await
    }

    /// Projects whose repository URL is exactly `url` (webhooks, imports).
    pub async fn projects_by_repo_url(&self, url: &str) -> Result<Vec<Project>> {
        let sql = "SELECT id FROM projects WHERE repo_url = $1 ORDER BY id";
        let ids = self.read_rows(sql, &[url.into()], |r| row::get_i64(r, "id")).await?;
        self.projects_by_id(ids).await
    }

    /// A project's creator and its owner and launch groups, what the
    /// authorization chain is told of the project's builds: one query,
    /// without the rest of the project.
    pub async fn project_owners(&self, id: Id) -> Result<Option<ProjectOwners>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {} FROM projects WHERE projects.id = $1", OWNER_COLUMNS.as_str())
        });
        Ok(self.read_row(SQL.as_str(), &[id.into()], |r| owners_from_row(r)).await?.flatten())
    }

    /// Projects in one stage of a pipeline (pipeline advancement).
    pub async fn projects_in_stage(&self, pipeline_id: Id, stage_id: Id) -> Result<Vec<Project>> {
        let sql = "SELECT id FROM projects WHERE pipeline_id = $1 AND stage_id = $2 ORDER BY name";
        let ids = self.read_rows(sql, &[pipeline_id.into(), stage_id.into()], |r| row::get_i64(r, "id")).await?;
        self.projects_by_id(ids).await
    }

    /// The projects of `ids` that still exist, in that order.
    async fn projects_by_id(&self, ids: Vec<Id>) -> Result<Vec<Project>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get_project(id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The columns of a `projects` row (in the query, possibly joined) that
/// [`owners_from_row`] reads: the project's id and creator, and its owner and
/// launch groups in their stored order, aggregated by `string_agg` (the same
/// on PostgreSQL and SQLite).
pub(super) static OWNER_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let groups = |table: &str| {
        format!(
            "(SELECT string_agg(CAST(group_id AS TEXT), ',' ORDER BY position, group_id) FROM {table} \
             WHERE project_id = projects.id)"
        )
    };
    format!(
        "projects.id AS owners_project_id, projects.created_by AS owners_created_by, \
         {} AS owners_owner_groups, {} AS owners_launch_groups",
        groups("project_owner_groups"),
        groups("project_launch_groups")
    )
});

/// A project's owners from [`OWNER_COLUMNS`]; none when the project is not
/// there (a build without one, or whose project is gone).
pub(super) fn owners_from_row<R: row::RowRead + ?Sized>(r: &R) -> Result<Option<ProjectOwners>> {
    let Some(id) = row::get_opt_i64(r, "owners_project_id")? else {
        return Ok(None);
    };
    Ok(Some(ProjectOwners {
        id,
        created_by: row::get_opt_i64(r, "owners_created_by")?,
        owner_group_ids: row::get_id_list(r, "owners_owner_groups")?,
        launch_group_ids: row::get_id_list(r, "owners_launch_groups")?,
    }))
}

// ---- the records ----

impl Record for VariableSet {
    const TABLE: &'static str = "variable_sets";
    const WHAT: &'static str = "variable set";
    const LINKS: &'static [Link<Self>] =
        &[link!(owner_group_ids: "variable_set_owner_groups" ("variable_set_id" -> "group_id") of "account_groups")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::json_object("variables", &self.variables)
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by)]
    }
}

impl Record for Snippet {
    const TABLE: &'static str = "snippets";
    const WHAT: &'static str = "snippet";
    const LINKS: &'static [Link<Self>] =
        &[link!(owner_group_ids: "snippet_owner_groups" ("snippet_id" -> "group_id") of "account_groups")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::snippet_name("name", &self.name)
    }
    /// The variables-snippets plugin injects a snippet as its name with `-` and spaces as `_`.
    fn name_key(name: &str) -> Option<String> {
        Some(name.replace(['-', ' '], "_"))
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by)]
    }
}

impl Record for SshKey {
    const TABLE: &'static str = "ssh_keys";
    const WHAT: &'static str = "ssh key";
    const LINKS: &'static [Link<Self>] =
        &[link!(owner_group_ids: "ssh_key_owner_groups" ("ssh_key_id" -> "group_id") of "account_groups")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        if let Secret::Set(k) = &self.private_key {
            if !k.contains("PRIVATE KEY") {
                return Err(ValidationError::new("private_key", "does not look like a PEM or OpenSSH private key"));
            }
        }
        if self.private_key == Secret::Empty {
            return Err(ValidationError::new("private_key", "is required"));
        }
        Ok(())
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by)]
    }
}

impl Record for ServiceLogin {
    const TABLE: &'static str = "service_logins";
    const WHAT: &'static str = "service login";
    const LINKS: &'static [Link<Self>] =
        &[link!(owner_group_ids: "service_login_owner_groups" ("service_login_id" -> "group_id") of "account_groups")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        if self.username.trim().is_empty() {
            return Err(ValidationError::new("username", "must not be blank"));
        }
        Ok(())
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by)]
    }
}

impl Record for WorkerPool {
    const TABLE: &'static str = "worker_pools";
    const WHAT: &'static str = "worker pool";
    const LINKS: &'static [Link<Self>] = &[
        link!(variable_set_ids: "worker_pool_variable_sets" ("worker_pool_id" -> "variable_set_id") of "variable_sets"),
    ];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::json_object("variables", &self.variables)?;
        v::plugin_key("isolation_method", &self.isolation_method)?;
        v::token("sudo_user", self.sudo_user.as_deref(), 100)?;
        v::permissions_hex("permissions_hex", &self.permissions_hex)?;
        v::range("sleep_seconds", self.sleep_seconds, 0, 86_400)?;
        v::range("auto_abort_minutes", self.auto_abort_minutes, 1, 525_600)?;
        v::range("build_object_shelf_life", self.build_object_shelf_life, 0, 100_000)?;
        v::range("build_root_shelf_life", self.build_root_shelf_life, 0, 100_000)?;
        v::range("minimum", self.minimum, 0, 100_000)?;
        v::range("maximum", self.maximum, self.minimum, 100_000)?;
        v::range("reevaluate_seconds", self.reevaluate_seconds, 1, 31_536_000)?;
        v::range("excess", self.excess, -100_000, 100_000)?;
        if self.autoscaling_enabled && self.autoscaler.is_empty() {
            return Err(ValidationError::new("autoscaler", "is required when autoscaling_enabled is set"));
        }
        if !self.autoscaler.is_empty() {
            v::plugin_key("autoscaler", &self.autoscaler)?;
        }
        for (f, x) in [
            ("running_weight", self.running_weight),
            ("queued_weight", self.queued_weight),
            ("multiplier", self.multiplier),
        ] {
            if !x.is_finite() || x < 0.0 {
                return Err(ValidationError::new(f, "must be a non-negative number"));
            }
        }
        Ok(())
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by)]
    }
}

impl Record for Stage {
    const TABLE: &'static str = "stages";
    const WHAT: &'static str = "stage";
    const LINKS: &'static [Link<Self>] =
        &[link!(variable_set_ids: "stage_variable_sets" ("stage_id" -> "variable_set_id") of "variable_sets")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::json_object("variables", &self.variables)
    }
}

impl Record for Pipeline {
    const TABLE: &'static str = "pipelines";
    const WHAT: &'static str = "pipeline";
    const LINKS: &'static [Link<Self>] = &[
        link!(stage_ids: "pipeline_stages" ("pipeline_id" -> "stage_id") of "stages"),
        link!(variable_set_ids: "pipeline_variable_sets" ("pipeline_id" -> "variable_set_id") of "variable_sets"),
        link!(owner_group_ids: "pipeline_owner_groups" ("pipeline_id" -> "group_id") of "account_groups"),
    ];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::json_object("variables", &self.variables)?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.stage_ids.iter().find(|s| !seen.insert(**s)) {
            return Err(ValidationError::new("stage_ids", format!("stage {dup} appears twice")));
        }
        Ok(())
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![("created_by", "users", self.created_by), ("last_completed_by", "builds", self.last_completed_by)]
    }
}

impl Record for Project {
    const TABLE: &'static str = "projects";
    const WHAT: &'static str = "project";
    const LINKS: &'static [Link<Self>] = &[
        link!(variable_set_ids: "project_variable_sets" ("project_id" -> "variable_set_id") of "variable_sets"),
        link!(ssh_key_ids: "project_ssh_keys" ("project_id" -> "ssh_key_id") of "ssh_keys"),
        link!(owner_group_ids: "project_owner_groups" ("project_id" -> "group_id") of "account_groups"),
        link!(launch_group_ids: "project_launch_groups" ("project_id" -> "group_id") of "account_groups"),
    ];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::script("script", &self.script)?;
        v::repo_url("repo_url", &self.repo_url)?;
        v::token("repo_branch", Some(&self.repo_branch), 255)?;
        v::plugin_key("scm_type", &self.scm_type)?;
        if let Secret::Set(token) = &self.webhook_token {
            v::token("webhook_token", Some(token), 128)?;
        }
        v::token("container_base_image", self.container_base_image.as_deref(), 512)?;
        v::range("timeout", self.timeout, 1, 525_600)?;
        v::json_object("variables", &self.variables)?;
        v::launch_questions("launch_questions", &self.launch_questions)?;
        v::schedule_spec("weekday_start_hours", &self.weekday_start_hours, 24)?;
        v::schedule_spec("weekday_start_minutes", &self.weekday_start_minutes, 59)?;
        v::schedule_spec("weekend_start_hours", &self.weekend_start_hours, 24)?;
        v::schedule_spec("weekend_start_minutes", &self.weekend_start_minutes, 59)?;
        v::range("schedule_threshold", self.schedule_threshold, 1, 525_600)?;
        v::cron("schedule_cron", &self.schedule_cron)?;
        v::time_zone("schedule_timezone", &self.schedule_timezone)?;
        v::string_list("triggers", &self.triggers)?;
        for (field, value) in self.keep_rules() {
            v::range(field, value.unwrap_or(0), 0, v::MAX_KEEP)?;
        }
        if self.stage_id.is_some() && self.pipeline_id.is_none() {
            return Err(ValidationError::new("stage_id", "a stage needs a pipeline"));
        }
        Ok(())
    }
    fn validate_policy(&self, policy: &v::SavePolicy) -> Result<(), ValidationError> {
        for (field, value) in self.keep_rules() {
            v::keep_rule_within_maximum(field, value, policy.retention.maximum(field))?;
        }
        v::local_repository("repo_url", &self.repo_url, &policy.local_repository_roots)
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![
            ("worker_pool_id", "worker_pools", Some(self.worker_pool_id)),
            ("pipeline_id", "pipelines", self.pipeline_id),
            ("stage_id", "stages", self.stage_id),
            ("scm_login_id", "service_logins", self.scm_login_id),
            ("created_by", "users", self.created_by),
        ]
    }
}

impl Record for Organization {
    const TABLE: &'static str = "organizations";
    const WHAT: &'static str = "organization";
    const LINKS: &'static [Link<Self>] =
        &[link!(auto_attach_ssh_key_ids: "organization_ssh_keys" ("organization_id" -> "ssh_key_id") of "ssh_keys")];
    fn id(&self) -> Id {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> Result<(), ValidationError> {
        v::name("name", &self.name)?;
        v::plugin_key("organization_type", &self.organization_type)?;
        if self.organization_identifier.trim().is_empty() {
            return Err(ValidationError::new("organization_identifier", "must not be blank"));
        }
        v::http_url("api_endpoint", &self.api_endpoint)?;
        v::range("refresh_minutes", self.refresh_minutes, 1, 525_600)
    }
    fn refs(&self) -> Vec<(&'static str, &'static str, Option<Id>)> {
        vec![
            ("default_worker_pool_id", "worker_pools", Some(self.default_worker_pool_id)),
            ("worker_pool_id", "worker_pools", Some(self.worker_pool_id)),
            ("scm_login_id", "service_logins", self.scm_login_id),
            ("created_by", "users", self.created_by),
        ]
    }
}

impl Project {
    /// The keep-rule fields by name (docs/retention.md).
    pub fn keep_rules(&self) -> [(&'static str, Option<i64>); 4] {
        [
            ("log_keep_builds", self.log_keep_builds),
            ("log_keep_days", self.log_keep_days),
            ("root_keep_builds", self.root_keep_builds),
            ("root_keep_days", self.root_keep_days),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::row::FromRow;
    use crate::store::test_store::{sqlite, Clear};

    /// Whether `SELECT columns FROM table` is a statement the schema takes.
    async fn select(store: &Store, columns: &str, table: &str) {
        let sql = format!("SELECT {columns} FROM {table} WHERE 1 = 0");
        if let Err(e) = sqlx::query(&sql).fetch_all(&store.pool).await {
            panic!("{table}: {columns}: {e}");
        }
    }

    async fn record<T: Record + Default>(store: &Store) {
        let written = T::default().columns(&Clear).unwrap();
        let written = written.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        select(store, T::COLUMNS, T::TABLE).await;
        select(store, &written, T::TABLE).await;
        for l in T::LINKS {
            select(store, &format!("{}, {}, position", l.owner_col, l.target_col), l.table).await;
            select(store, "id", l.target_table).await;
        }
    }

    /// The columns the derives read and write are the migrations' (on
    /// SQLite; the PostgreSQL migrations name the same columns): a field
    /// renamed without its column fails here, not at its first save.
    #[tokio::test]
    async fn derived_columns_are_the_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        record::<Project>(&store).await;
        record::<Pipeline>(&store).await;
        record::<Stage>(&store).await;
        record::<WorkerPool>(&store).await;
        record::<VariableSet>(&store).await;
        record::<Snippet>(&store).await;
        record::<SshKey>(&store).await;
        record::<ServiceLogin>(&store).await;
        record::<Organization>(&store).await;
        select(&store, User::COLUMNS, "users").await;
        select(&store, Group::COLUMNS, "account_groups").await;
        select(&store, ApiToken::COLUMNS, "api_tokens").await;
        select(&store, Worker::COLUMNS, "workers").await;
        select(&store, Build::COLUMNS, "builds").await;
        select(&store, PipelineApproval::COLUMNS, "pipeline_approvals").await;
        select(&store, AuditEvent::COLUMNS, "audit_events").await;
    }

    /// What the write attributes make of blank values.
    #[test]
    fn blank_values_are_written_as_their_defaults() {
        let project = Project {
            variables: " ".into(),
            launch_questions: String::new(),
            container_base_image: Some(String::new()),
            schedule_timezone: " ".into(),
            schedule_cron: " 0 * * * * ".into(),
            log_keep_days: Some(0),
            webhook_token: Secret::Set(String::new()),
            ..Project::default()
        };
        let columns = project.columns(&Clear).unwrap();
        let column = |name: &str| format!("{:?}", columns.iter().find(|(c, _)| *c == name).map(|(_, v)| v));
        assert_eq!(column("variables"), r#"Some(Text(Some("{}")))"#);
        assert_eq!(column("launch_questions"), r#"Some(Text(Some("[]")))"#);
        assert_eq!(column("container_base_image"), "Some(Text(None))");
        assert_eq!(column("schedule_timezone"), r#"Some(Text(Some("UTC")))"#);
        assert_eq!(column("schedule_cron"), r#"Some(Text(Some("0 * * * *")))"#);
        assert_eq!(column("log_keep_days"), "Some(Int(None))");
        assert_eq!(column("webhook_token"), "Some(Text(None))");
        assert_eq!(column("id"), "None");
        assert_eq!(column("last_build_id"), "None");
        assert_eq!(column("ssh_key_ids"), "None");
        let kept = SshKey { private_key: Secret::Stored, ..SshKey::default() }.columns(&Clear).unwrap();
        assert!(kept.iter().all(|(c, _)| *c != "private_key"), "a stored secret is kept, not written");
    }
}
