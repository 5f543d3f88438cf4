//! The configuration objects (projects, pipelines, pools, users, ...):
//! reading one as JSON, listing what a principal may see, the `use` checks
//! on references, and creating, changing and deleting with their
//! authorization, checks and audit records. The API and the UI both call
//! these. A create or change is read into the kind's typed change
//! (`<Kind>Patch`, `store::patch`), which holds only the fields clients may
//! set, and applied to the kind's defaults or to the stored object.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::access::{authz_object_of, authz_object_with, Owned};
use super::{audit, Error, Failure, Principal, Service};
use crate::store::{
    AuditActor, AuditEntry, AuditObject, Id, NewUser, ObjectKind, Organization, Patch, Patchable, Pipeline, Project,
    Record, ServiceLogin, Snippet, SshKey, Stage, User, UserPatch, VariableSet, WorkerPool,
};

/// What kind of JSON value `v` is, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn reject_unknown(body: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), Error> {
    if let Some(key) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::field(key, format!("unknown field '{key}' for {what} (allowed: {})", allowed.join(", "))));
    }
    Ok(())
}

/// Deserializes `value` into `T`, naming the field at fault.
pub fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::field(&field, format!("field '{field}' of {what}: {}", e.inner()))
    })
}

// ------------------------------------------------------------ objects

/// The fields of `kind` that name other objects, and the kind each names:
/// saving one asks the authorization chain whether the caller may `use` it.
pub fn references(kind: ObjectKind) -> &'static [(&'static str, ObjectKind)] {
    use ObjectKind::*;
    match kind {
        Project => &[
            ("worker_pool_id", WorkerPool),
            ("scm_login_id", ServiceLogin),
            ("ssh_key_ids", SshKey),
            ("variable_set_ids", VariableSet),
            ("pipeline_id", Pipeline),
            ("stage_id", Stage),
        ],
        Pipeline => &[("stage_ids", Stage), ("variable_set_ids", VariableSet)],
        Stage | WorkerPool => &[("variable_set_ids", VariableSet)],
        Organization => &[
            ("worker_pool_id", WorkerPool),
            ("default_worker_pool_id", WorkerPool),
            ("scm_login_id", ServiceLogin),
            ("auto_attach_ssh_key_ids", SshKey),
        ],
        VariableSet | Snippet | SshKey | ServiceLogin | User | Group => &[],
    }
}

/// The ids a reference field holds: one id, a list, or none.
pub fn referenced_ids(value: &Value) -> Vec<Id> {
    match value {
        Value::Array(items) => items.iter().filter_map(Value::as_i64).collect(),
        other => other.as_i64().into_iter().collect(),
    }
}

/// Runs `$body` with `$T` the stored type of `$kind` (every kind but users
/// and groups, which have store functions of their own: callers handle them
/// first).
macro_rules! with_record_type {
    ($kind:expr, $T:ident => $body:expr) => {
        with_record_type!(@each $kind, $T, $body;
            Project, Pipeline, Stage, WorkerPool, VariableSet, Snippet, SshKey, ServiceLogin, Organization)
    };
    (@each $kind:expr, $T:ident, $body:expr; $($ty:ident),*) => {
        match $kind {
            $(ObjectKind::$ty => {
                type $T = $ty;
                $body
            })*
            ObjectKind::User | ObjectKind::Group => unreachable!("users and groups are not dispatched"),
        }
    };
}

/// A patch's refusal as the service's error, naming the field.
fn patch_error(e: crate::store::ValidationError) -> Error {
    Error::field(&e.field, e.message)
}

/// A new object of `kind` before the client's fields: the one table of
/// defaults, for the API's creates and the UI's empty forms alike.
pub fn defaults(kind: ObjectKind) -> Result<Value, Error> {
    match kind {
        ObjectKind::User => Ok(json!({
            "username": "", "email": "", "first_name": "", "last_name": "",
            "is_superuser": false, "is_active": true, "group_ids": [],
        })),
        ObjectKind::Group => Ok(json!({ "name": "" })),
        _ => with_record_type!(kind, T => Ok(as_value(&T::default()))),
    }
}

/// What others see of a user: the username and the id, nothing else.
/// The `name` of a group's create or rename body, the only field it has.
fn group_name(body: &Map<String, Value>) -> Result<&str, Error> {
    reject_unknown(body, &["name"], "group")?;
    body.get("name").and_then(Value::as_str).ok_or_else(|| Error::field("name", "'name' (a string) is required"))
}

pub fn user_summary(user: &Value) -> Value {
    json!({ "id": user["id"], "username": user["username"] })
}

/// Overlays client input on an object, refusing unknown and read-only fields.
/// Stored objects as JSON.
fn as_values<T: serde::Serialize>(objects: Vec<T>) -> Vec<Value> {
    objects.into_iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect()
}

/// A stored object as JSON.
fn as_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

/// The audit record of `action` on an object of `kind`, made from the
/// object as stored (`after`): its name, and what changed of the fields
/// `asked` since `before`.
fn change_record<'a>(
    actor: AuditActor,
    action: &'a str,
    kind: ObjectKind,
    before: Option<&'a Value>,
    asked: &'a [String],
) -> impl FnOnce(&Value) -> AuditEntry + 'a {
    move |after| AuditEntry {
        actor,
        action: action.to_string(),
        object: AuditObject::new(kind.as_str(), after["id"].as_i64(), object_name(kind, after)),
        details: audit::change_details(before, after, asked),
    }
}

/// Fields whose value is a JSON document (variables, a project's launch
/// questions and per-project triggers): shown as the document, and taken as
/// the document or, deprecated, as the document in a JSON string
/// (`store::models`' `json_doc`).
pub const JSON_TEXT_FIELDS: &[&str] = &["variables", "launch_questions", "triggers"];

/// The query parameters of a listing that are its page, not its filters.
const PAGING: &[&str] = &["limit", "offset"];

/// A page of a listing.
pub struct Listing {
    /// How many objects match, on every page.
    pub count: usize,
    /// The page's objects, serialized.
    pub results: Vec<Box<RawValue>>,
}

impl Listing {
    /// The page of `all` from `offset`, at most `limit` objects.
    fn of<T: serde::Serialize>(all: &[T], offset: usize, limit: usize) -> Result<Self, Error> {
        let results = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(serde_json::value::to_raw_value)
            .collect::<Result<_, _>>()
            .map_err(Error::internal)?;
        Ok(Listing { count: all.len(), results })
    }
}

/// `?field=value` filters on top-level fields, compared as text.
pub fn filter_by_query(
    all: Vec<Value>,
    query: &HashMap<String, String>,
    kind: ObjectKind,
) -> Result<Vec<Value>, Error> {
    let filters: Vec<(&String, &String)> = query.iter().filter(|(k, _)| !PAGING.contains(&k.as_str())).collect();
    // A field no listed row has is unknown (rows shown in part lack some).
    if let Some((key, _)) =
        filters.iter().find(|(k, _)| !all.is_empty() && all.iter().all(|f| f.get(k.as_str()).is_none()))
    {
        return Err(Error::field(key, format!("unknown filter '{key}' for {}", kind.label())));
    }
    Ok(all
        .into_iter()
        .filter(|v| {
            filters.iter().all(|(k, want)| match v.get(k.as_str()) {
                None => false,
                Some(Value::String(s)) => s == *want,
                Some(Value::Null) => want.is_empty() || *want == "null",
                Some(other) => format!("{other}") == **want,
            })
        })
        .collect())
}

/// What a user's create or change may send: [`UserPatch`]'s fields and the
/// passwords, which are not fields of a [`User`].
pub const USER_FIELDS: &[&str] = &[
    "username",
    "password",
    "current_password",
    "email",
    "first_name",
    "last_name",
    "is_superuser",
    "is_active",
    "group_ids",
];

/// The display name of an object (the username of a user).
pub fn object_name(kind: ObjectKind, v: &Value) -> String {
    v[kind.name_field()].as_str().unwrap_or_default().to_string()
}

impl Service {
    /// Asks whether the principal may `use` every object that `after` names and
    /// `before` (the stored object, on update) did not: a reference already
    /// there is not asked again, so existing objects keep working. A refusal is
    /// a 403 naming the field and the object.
    pub async fn check_uses(
        &self,
        principal: &Principal,
        kind: ObjectKind,
        before: Option<&Value>,
        after: &Value,
    ) -> Result<(), Error> {
        for &(field, target) in references(kind) {
            let old = before.map(|b| referenced_ids(&b[field])).unwrap_or_default();
            for id in referenced_ids(&after[field]) {
                if old.contains(&id) {
                    continue;
                }
                // A missing object is the store's to refuse, naming the field.
                let value = match self.get_value(target, id).await {
                    Ok(v) => v,
                    Err(e) if e.failure == Failure::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let extra = [("name", value["name"].clone()), ("field", json!(field))];
                if let Err(e) = self.authorize_on(principal, "use", target.as_str(), &value, &extra).await {
                    if !e.is_forbidden() {
                        return Err(e);
                    }
                    let what = target.label();
                    let name = value["name"].as_str().unwrap_or_default();
                    return Err(Error {
                        failure: Failure::Forbidden,
                        message: format!(
                            "field '{field}': you may not use the {what} '{name}' (id {id}), which is neither yours nor \
                             shared: {}",
                            e.message
                        ),
                        field: Some(field.to_string()),
                    });
                }
            }
        }
        Ok(())
    }

    /// One object, as the principal may see it: all of it with `view`; of
    /// another user, a logged-in user sees the username and id alone.
    pub async fn view_object(&self, principal: &Principal, kind: ObjectKind, id: Id) -> Result<Value, Error> {
        let value = self.get_value(kind, id).await?;
        match self.authorize_on(principal, "view", kind.as_str(), &value, &[]).await {
            Ok(()) => Ok(value),
            Err(e) if kind == ObjectKind::User && principal.user().is_some() && e.is_forbidden() => {
                Ok(user_summary(&value))
            }
            Err(e) => Err(e),
        }
    }

    /// Names by id, for showing references: every group and user (a name
    /// says no more than the id the referring object holds), and of other
    /// kinds the objects the principal may see.
    pub async fn names(&self, principal: &Principal, kind: ObjectKind) -> Result<HashMap<Id, String>, Error> {
        let values = match kind {
            ObjectKind::Group | ObjectKind::User => self.list_values(kind).await?,
            _ => self.list_visible(principal, kind).await?,
        };
        Ok(values.iter().filter_map(|v| Some((v["id"].as_i64()?, object_name(kind, v)))).collect())
    }

    /// The ids among `ids` (objects of `kind`) the principal may `use`: what
    /// a form's pickers offer (saving checks each reference again).
    pub async fn usable(&self, principal: &Principal, kind: ObjectKind, ids: Vec<Id>) -> Result<Vec<Id>, Error> {
        let user = principal.require()?;
        let groups = self.groups_for(principal).await?;
        let user = super::access::user_info_with(&groups, user);
        let mut candidates = Vec::new();
        for id in ids {
            if let Ok(value) = self.get_value(kind, id).await {
                candidates.push(super::access::authz_object_with(&groups, kind.as_str(), &value));
            }
        }
        self.filter_by(Some(user), "use", kind.as_str(), candidates).await
    }

    pub async fn list_values(&self, kind: ObjectKind) -> Result<Vec<Value>, Error> {
        match kind {
            ObjectKind::User => Ok(as_values(self.store().list_users().await?)),
            ObjectKind::Group => Ok(as_values(self.store().list_groups().await?)),
            _ => with_record_type!(kind, T => Ok(as_values(self.store().list_records::<T>().await?))),
        }
    }

    pub async fn get_value(&self, kind: ObjectKind, id: Id) -> Result<Value, Error> {
        let found = match kind {
            ObjectKind::User => self.store().get_user(id).await?.map(|u| serde_json::to_value(u).unwrap_or_default()),
            ObjectKind::Group => self
                .store()
                .list_groups()
                .await?
                .into_iter()
                .find(|g| g.id == id)
                .map(|g| serde_json::to_value(g).unwrap_or_default()),
            _ => with_record_type!(kind, T => self.store().get_record::<T>(id).await?.map(|o| as_value(&o))),
        };
        found.ok_or_else(|| Error::not_found(&format!("{} {id}", kind.label())))
    }

    /// The objects among `values` the principal may see (the authorization chain's `filter_list`).
    /// Users are the exception: a logged-in user sees every other user, but by
    /// username only (with the id that other objects point at).
    pub async fn only_visible(
        &self,
        principal: &Principal,
        kind: ObjectKind,
        groups: &[crate::store::Group],
        values: Vec<Value>,
    ) -> Result<Vec<Value>, Error> {
        let objects = values.iter().map(|v| authz_object_with(groups, kind.as_str(), v)).collect();
        let visible = self.visible_with(principal, groups, kind.as_str(), objects).await?;
        let shown = |v: &Value| v["id"].as_i64().is_some_and(|i| visible.contains(&i));
        if kind == ObjectKind::User && principal.user().is_some() {
            return Ok(values.into_iter().map(|v| if shown(&v) { v } else { user_summary(&v) }).collect());
        }
        Ok(values.into_iter().filter(shown).collect())
    }

    /// Every object of `kind` the principal may see, as JSON (after `list` is authorized).
    pub async fn list_visible(&self, principal: &Principal, kind: ObjectKind) -> Result<Vec<Value>, Error> {
        let (all, groups) = futures_util::future::try_join(self.list_values(kind), async {
            Ok::<_, Error>(self.groups_for(principal).await?)
        })
        .await?;
        self.authorize_with(principal, &groups, "list", kind.as_str(), None).await?;
        self.only_visible(principal, kind, &groups, all).await
    }

    /// A page of the objects of `kind` the principal may see (after `list`
    /// is authorized), filtered by the query's `?field=value` pairs
    /// ([`filter_by_query`]). Each object on the page is serialized once,
    /// from its type; only a filtered listing reads objects as JSON values.
    pub async fn list_page(
        &self,
        principal: &Principal,
        kind: ObjectKind,
        query: &HashMap<String, String>,
        offset: usize,
        limit: usize,
    ) -> Result<Listing, Error> {
        match kind {
            ObjectKind::User | ObjectKind::Group => {
                let visible = filter_by_query(self.list_visible(principal, kind).await?, query, kind)?;
                Listing::of(&visible, offset, limit)
            }
            _ => with_record_type!(kind, T => self.list_page_of::<T>(principal, kind, query, offset, limit).await),
        }
    }

    async fn list_page_of<T: Record + Owned + serde::Serialize>(
        &self,
        principal: &Principal,
        kind: ObjectKind,
        query: &HashMap<String, String>,
        offset: usize,
        limit: usize,
    ) -> Result<Listing, Error> {
        let (all, groups) =
            futures_util::future::try_join(self.store().list_records::<T>(), self.groups_for(principal))
                .await
                .map_err(Error::from)?;
        self.authorize_with(principal, &groups, "list", kind.as_str(), None).await?;
        let objects = all.iter().map(|o| authz_object_of(&groups, o)).collect();
        let shown: std::collections::HashSet<Id> =
            self.visible_with(principal, &groups, kind.as_str(), objects).await?.into_iter().collect();
        let visible: Vec<T> = all.into_iter().filter(|o| shown.contains(&o.object_id())).collect();
        if query.keys().any(|k| !PAGING.contains(&k.as_str())) {
            let values = filter_by_query(as_values(visible), query, kind)?;
            return Listing::of(&values, offset, limit);
        }
        Listing::of(&visible, offset, limit)
    }

    /// Creates an object from JSON input, as `POST /api/v1/<kind>s` does, `create`
    /// authorization included.
    pub async fn create_object(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        kind: ObjectKind,
        body: Map<String, Value>,
    ) -> Result<Value, Error> {
        let user = principal.require()?.clone();
        self.authorize(principal, "create", kind.as_str(), None).await?;
        let what = kind.label();
        let asked: Vec<String> = body.keys().cloned().collect();
        // Shared by the API and the UI: every object created is recorded, in the transaction that creates it.
        let record = change_record(audit::actor(principal, client), "create", kind, None, &asked);
        match kind {
            ObjectKind::User => self.create_user(body, record).await,
            ObjectKind::Group => {
                let name = group_name(&body)?;
                let stored = self.store().create_group_audited(name, |g| record(&as_value(g))).await?;
                Ok(as_value(&stored))
            }
            _ => with_record_type!(kind, T => {
                let mut object = T::default();
                <T as Patchable>::Patch::from_fields(body, &what).map_err(patch_error)?.apply(&mut object);
                object.set_creator(user.id);
                let value = as_value(&object);
                self.check_uses(principal, kind, None, &value).await?;
                self.check_autoscaler(kind, &value)?;
                let stored = self.store().create_record_audited(&object, |stored: &T| record(&as_value(stored))).await?;
                Ok(as_value(&stored))
            }),
        }
    }

    /// Changes fields of an object, as `PATCH /api/v1/<kind>s/{id}` does, `edit` authorization included.
    pub async fn update_object(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        kind: ObjectKind,
        id: Id,
        body: Map<String, Value>,
    ) -> Result<Value, Error> {
        let what = kind.label();
        let asked: Vec<String> = body.keys().cloned().collect();
        let actor = audit::actor(principal, client);
        let not_found = || Error::not_found(&format!("{what} {id}"));
        // Shared by the API and the UI: every object changed is recorded, in the transaction that changes it.
        match kind {
            ObjectKind::User => {
                let current = self.store().get_user(id).await?.ok_or_else(not_found)?;
                let before = as_value(&current);
                self.authorize_edit(principal, kind, &before, &asked).await?;
                let record = change_record(actor, "update", kind, Some(&before), &asked);
                self.update_user(principal, current, body, record).await
            }
            ObjectKind::Group => {
                let before = self.get_value(kind, id).await?;
                self.authorize_edit(principal, kind, &before, &asked).await?;
                let record = change_record(actor, "update", kind, Some(&before), &asked);
                let name = group_name(&body)?;
                let stored = self.store().rename_group_audited(id, name, |g| record(&as_value(g))).await?;
                Ok(as_value(&stored))
            }
            _ => with_record_type!(kind, T => {
                let current = self.store().get_record::<T>(id).await?.ok_or_else(not_found)?;
                let before = as_value(&current);
                self.authorize_edit(principal, kind, &before, &asked).await?;
                let record = change_record(actor, "update", kind, Some(&before), &asked);
                let mut object = current;
                <T as Patchable>::Patch::from_fields(body, &what).map_err(patch_error)?.apply(&mut object);
                let after = as_value(&object);
                self.check_uses(principal, kind, Some(&before), &after).await?;
                self.check_autoscaler(kind, &after)?;
                let stored = self.store().update_record_audited(&object, |stored: &T| record(&as_value(stored))).await?;
                Ok(as_value(&stored))
            }),
        }
    }

    /// Asks the authorization chain whether the principal may `edit` the
    /// object `before`, changing the fields `asked`.
    async fn authorize_edit(
        &self,
        principal: &Principal,
        kind: ObjectKind,
        before: &Value,
        asked: &[String],
    ) -> Result<(), Error> {
        let mut changes = asked.to_vec();
        if asked.iter().any(|f| f == "group_ids") {
            // Authorization plugins speak of group membership as `groups`.
            changes.push("groups".into());
        }
        self.authorize_on(principal, "edit", kind.as_str(), before, &[("changes", json!(changes))]).await
    }

    /// Deletes an object, as `DELETE /api/v1/<kind>s/{id}` does, `delete` authorization included.
    pub async fn delete_object(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        kind: ObjectKind,
        id: Id,
    ) -> Result<(), Error> {
        let current = self.get_value(kind, id).await?;
        self.authorize_on(principal, "delete", kind.as_str(), &current, &[]).await?;
        let record = AuditEntry {
            actor: audit::actor(principal, client),
            action: "delete".into(),
            object: AuditObject::new(kind.as_str(), Some(id), object_name(kind, &current)),
            details: json!({}),
        };
        let deleted = match kind {
            ObjectKind::User => self.store().delete_user_audited(id, &record).await?,
            ObjectKind::Group => self.store().delete_group_audited(id, &record).await?,
            _ => with_record_type!(kind, T => self.store().delete_row(T::TABLE, T::WHAT, id, Some(&record)).await?),
        };
        if !deleted {
            return Err(Error::not_found(&format!("{} {id}", kind.label())));
        }
        Ok(())
    }

    /// A pool's `autoscaler` must name an entry of the `[plugins.autoscalers]`
    /// settings section: the API picks an autoscaler, it never defines one (its
    /// parameters, commands included, come only from the settings files).
    pub fn check_autoscaler(&self, kind: ObjectKind, value: &Value) -> Result<(), Error> {
        let name = value.get("autoscaler").and_then(Value::as_str).unwrap_or("");
        if kind != ObjectKind::WorkerPool || name.is_empty() {
            return Ok(());
        }
        let section = crate::settings::PluginSection::Autoscalers;
        if self.registry().get(section, name).is_none() {
            let known = self.registry().names(section);
            let known = if known.is_empty() { "none is configured".to_string() } else { known.join(", ") };
            return Err(Error::field(
                "autoscaler",
                format!(
                    "'autoscaler': '{name}' is not an autoscaler in the settings' [plugins.autoscalers] section ({known})"
                ),
            ));
        }
        Ok(())
    }

    async fn create_user(
        &self,
        body: Map<String, Value>,
        record: impl FnOnce(&Value) -> AuditEntry,
    ) -> Result<Value, Error> {
        reject_unknown(&body, USER_FIELDS, "user")?;
        #[derive(serde::Deserialize)]
        struct Input {
            username: String,
            password: String,
            #[serde(default)]
            email: String,
            #[serde(default)]
            first_name: String,
            #[serde(default)]
            last_name: String,
            #[serde(default)]
            is_superuser: bool,
            #[serde(default)]
            group_ids: Vec<Id>,
        }
        let input: Input = typed(Value::Object(body), "user")?;
        let user = NewUser {
            username: input.username,
            password: input.password,
            email: input.email,
            first_name: input.first_name,
            last_name: input.last_name,
            is_superuser: input.is_superuser,
        };
        let stored = self.store().create_user_audited(&user, &input.group_ids, |u| record(&as_value(u))).await?;
        Ok(as_value(&stored))
    }

    async fn update_user(
        &self,
        principal: &Principal,
        current: User,
        mut body: Map<String, Value>,
        record: impl FnOnce(&Value) -> AuditEntry,
    ) -> Result<Value, Error> {
        reject_unknown(&body, USER_FIELDS, "user")?;
        let mut string_field = |name: &str| match body.remove(name) {
            Some(Value::String(p)) => Ok(Some(p)),
            Some(Value::Null) | None => Ok(None),
            Some(other) => Err(Error::field(name, format!("'{name}' must be a string, got {}", kind_of(&other)))),
        };
        let password = string_field("password")?;
        let current_password = string_field("current_password")?;
        let mut user = current;
        UserPatch::from_fields(body, "user").map_err(patch_error)?.apply(&mut user);
        if let Some(p) = &password {
            // An account another source created has its password checked there.
            if user.auth_source != crate::settings::LOCAL_SOURCE {
                return Err(Error::field(
                    "password",
                    format!(
                        "this account's password is checked by the authentication source '{}', not by Vespene",
                        user.auth_source
                    ),
                ));
            }
            // Checked first so a weak password leaves the other fields unsaved too.
            crate::store::check_password(p).map_err(crate::store::StoreError::from)?;
            let caller = principal.require()?;
            if caller.id == user.id {
                // One's own password: prove the current one, so a stolen session
                // or token cannot lock its owner out.
                let Some(given) = current_password.as_deref() else {
                    return Err(Error::field(
                        "current_password",
                        "changing your own password needs 'current_password' (your current password)",
                    ));
                };
                if !self.store().password_matches(user.id, given).await? {
                    return Err(Error {
                        failure: Failure::Forbidden,
                        message: "'current_password' is not your current password".into(),
                        field: Some("current_password".into()),
                    });
                }
            } else if !caller.is_superuser {
                // Only a superuser resets someone else's password (without theirs).
                return Err(Error::forbidden("only a superuser may set another user's password"));
            }
        }
        // A new password ends every other way in: the user's other sessions
        // and their API tokens (all but the one making the change, when it is theirs).
        let (keep_session, keep_token) = match principal {
            Principal::Session { user: u, sid } if u.id == user.id => (Some(sid.as_str()), None),
            Principal::Token { user: u, token, .. } if u.id == user.id => (None, Some(token.as_str())),
            _ => (None, None),
        };
        let stored = self
            .store()
            .update_user_audited(&user, password.as_deref(), keep_session, keep_token, |u| record(&as_value(u)))
            .await?;
        Ok(as_value(&stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_fields_are_its_patch_and_the_passwords() {
        let mut expected: Vec<&str> = <UserPatch as Patch>::FIELDS.to_vec();
        expected.extend(["password", "current_password"]);
        let mut listed = USER_FIELDS.to_vec();
        expected.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, expected);
    }
}
