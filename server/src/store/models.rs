//! The domain types: one struct per stored object, as the rest of the server
//! sees them. Field names follow the original's data model (inventory §2);
//! many-to-many links are id lists in the owning struct; denormalised build
//! pointers (`last_build_id`, ...) are read-only here and kept by the queue
//! functions.
//!
//! Secrets never appear in clear in these types: a [`Secret`] read from the
//! store is `Stored` (masked), and only `Store::reveal_*` returns plaintext.
//!
//! A struct stored as a row derives `FromRow` (and `ToColumns` when the
//! generic save path writes it): each field is the column of its name,
//! and its `#[row(...)]` attribute, if any, says what is not plain (the
//! `vespene-store-derive` crate documents them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vespene_store_derive::{FromRow, Patch, ToColumns};

use super::row;

/// A row id.
pub type Id = i64;
/// A point in time (UTC, millisecond precision in the store).
pub type Timestamp = DateTime<Utc>;

/// A secret field. Read from the store it is `Stored` or `Empty`; to change
/// it, set `Set(plaintext)`; leaving `Stored` on save keeps the stored value.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Secret {
    /// Nothing stored (saving `Empty` clears it).
    #[default]
    Empty,
    /// A value is stored; it is not loaded in clear.
    Stored,
    /// A new value to encrypt and store.
    Set(String),
}

impl Secret {
    /// True when there is (or will be) a value.
    pub fn is_present(&self) -> bool {
        !matches!(self, Secret::Empty)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Empty => f.write_str("Secret::Empty"),
            Secret::Stored | Secret::Set(_) => f.write_str("Secret(********)"),
        }
    }
}

/// Serialises as `null` or `"********"`, never the value.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Secret::Empty => s.serialize_none(),
            _ => s.serialize_str("********"),
        }
    }
}

/// From input: `null` clears, `"********"` keeps, any other string sets.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            None => Secret::Empty,
            Some(s) if s == "********" => Secret::Stored,
            Some(s) => Secret::Set(s),
        })
    }
}

/// Described as it serializes: `null` or the mask, never the value.
impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some(
                "A secret: read as null (none stored) or \"********\"; send null to clear it, \"********\" to keep \
                 it, or the new value",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Secret {}

/// The kinds of object people create, change and delete (the REST API's
/// `/api/v1/<plural>` collections and the UI's pages). Authorization plugins
/// see the same names as strings ([`ObjectKind::as_str`]), along with
/// `build`, which is not made this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A [`Project`].
    Project,
    /// A [`Pipeline`].
    Pipeline,
    /// A [`Stage`].
    Stage,
    /// A [`WorkerPool`].
    WorkerPool,
    /// A [`VariableSet`].
    VariableSet,
    /// A [`Snippet`].
    Snippet,
    /// An [`SshKey`].
    SshKey,
    /// A [`ServiceLogin`].
    ServiceLogin,
    /// An [`Organization`].
    Organization,
    /// A [`User`].
    User,
    /// A [`Group`].
    Group,
}

impl ObjectKind {
    /// The fields the server keeps and clients may not set (`FromRow::KEPT`:
    /// the id, and the fields marked `read_only` or `kept`).
    pub fn kept_fields(self) -> &'static [&'static str] {
        use super::row::FromRow;
        match self {
            ObjectKind::Project => Project::KEPT,
            ObjectKind::Pipeline => Pipeline::KEPT,
            ObjectKind::Stage => Stage::KEPT,
            ObjectKind::WorkerPool => WorkerPool::KEPT,
            ObjectKind::VariableSet => VariableSet::KEPT,
            ObjectKind::Snippet => Snippet::KEPT,
            ObjectKind::SshKey => SshKey::KEPT,
            ObjectKind::ServiceLogin => ServiceLogin::KEPT,
            ObjectKind::Organization => Organization::KEPT,
            ObjectKind::User => User::KEPT,
            ObjectKind::Group => Group::KEPT,
        }
    }

    /// The fields a client may set, in the object's order (the kind's typed
    /// change, `<Kind>Patch`, holds these and no others).
    pub fn settable_fields(self) -> &'static [&'static str] {
        use super::patch::{Patch, Patchable};
        fn of<T: Patchable>() -> &'static [&'static str] {
            <T::Patch as Patch>::FIELDS
        }
        match self {
            ObjectKind::Project => of::<Project>(),
            ObjectKind::Pipeline => of::<Pipeline>(),
            ObjectKind::Stage => of::<Stage>(),
            ObjectKind::WorkerPool => of::<WorkerPool>(),
            ObjectKind::VariableSet => of::<VariableSet>(),
            ObjectKind::Snippet => of::<Snippet>(),
            ObjectKind::SshKey => of::<SshKey>(),
            ObjectKind::ServiceLogin => of::<ServiceLogin>(),
            ObjectKind::Organization => of::<Organization>(),
            ObjectKind::User => of::<User>(),
            ObjectKind::Group => of::<Group>(),
        }
    }

    /// Every kind, in the order the API and the UI list them.
    pub const ALL: [ObjectKind; 11] = [
        ObjectKind::Project,
        ObjectKind::Pipeline,
        ObjectKind::Stage,
        ObjectKind::WorkerPool,
        ObjectKind::VariableSet,
        ObjectKind::Snippet,
        ObjectKind::SshKey,
        ObjectKind::ServiceLogin,
        ObjectKind::Organization,
        ObjectKind::User,
        ObjectKind::Group,
    ];

    /// The name plugins, route ids and audit records use: `worker_pool`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Project => "project",
            ObjectKind::Pipeline => "pipeline",
            ObjectKind::Stage => "stage",
            ObjectKind::WorkerPool => "worker_pool",
            ObjectKind::VariableSet => "variable_set",
            ObjectKind::Snippet => "snippet",
            ObjectKind::SshKey => "ssh_key",
            ObjectKind::ServiceLogin => "service_login",
            ObjectKind::Organization => "organization",
            ObjectKind::User => "user",
            ObjectKind::Group => "group",
        }
    }

    /// The collection's path segment: `worker_pools`.
    pub const fn plural(self) -> &'static str {
        match self {
            ObjectKind::Project => "projects",
            ObjectKind::Pipeline => "pipelines",
            ObjectKind::Stage => "stages",
            ObjectKind::WorkerPool => "worker_pools",
            ObjectKind::VariableSet => "variable_sets",
            ObjectKind::Snippet => "snippets",
            ObjectKind::SshKey => "ssh_keys",
            ObjectKind::ServiceLogin => "service_logins",
            ObjectKind::Organization => "organizations",
            ObjectKind::User => "users",
            ObjectKind::Group => "groups",
        }
    }

    /// The kind [`as_str`](Self::as_str) names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind whose collection [`plural`](Self::plural) names.
    pub fn from_plural(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == segment)
    }

    /// In a sentence: `worker pool`.
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }

    /// The field that names an object of this kind.
    pub const fn name_field(self) -> &'static str {
        match self {
            ObjectKind::User => "username",
            _ => "name",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The states of a build (inventory §2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker.
    Running,
    /// Finished well.
    Success,
    /// Finished badly (or could not start).
    Failure,
    /// A stop was asked for; the worker will notice.
    Aborting,
    /// Stopped, or dropped as a duplicate.
    Aborted,
    /// Queued too long with nobody to run it.
    Orphaned,
}

impl BuildStatus {
    /// Every status.
    pub const ALL: [BuildStatus; 7] = [
        BuildStatus::Queued,
        BuildStatus::Running,
        BuildStatus::Success,
        BuildStatus::Failure,
        BuildStatus::Aborting,
        BuildStatus::Aborted,
        BuildStatus::Orphaned,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "QUEUED",
            BuildStatus::Running => "RUNNING",
            BuildStatus::Success => "SUCCESS",
            BuildStatus::Failure => "FAILURE",
            BuildStatus::Aborting => "ABORTING",
            BuildStatus::Aborted => "ABORTED",
            BuildStatus::Orphaned => "ORPHANED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Not yet finished: QUEUED, RUNNING or ABORTING.
    pub fn is_active(self) -> bool {
        matches!(self, BuildStatus::Queued | BuildStatus::Running | BuildStatus::Aborting)
    }

    /// The statuses a build may move to from this one. A success can still
    /// become a failure (a success trigger failed).
    pub fn next(self) -> &'static [BuildStatus] {
        use BuildStatus::*;
        match self {
            Queued => &[Running, Failure, Aborting, Aborted, Orphaned],
            Running => &[Success, Failure, Aborting, Aborted, Orphaned],
            Aborting => &[Aborted, Failure, Orphaned],
            Success => &[Failure],
            Failure | Aborted | Orphaned => &[],
        }
    }

    /// The statuses from which `self` may be entered.
    pub fn previous(self) -> Vec<BuildStatus> {
        Self::ALL.into_iter().filter(|p| p.next().contains(&self)).collect()
    }

    /// True when the move is allowed.
    pub fn can_become(self, next: BuildStatus) -> bool {
        self.next().contains(&next)
    }
}

impl std::fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user account. The password hash never leaves the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, Patch)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// E-mail address.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// May do everything.
    pub is_superuser: bool,
    /// May log in.
    pub is_active: bool,
    /// When created.
    #[row(kept)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last successful login.
    #[row(kept)]
    pub last_login: Option<DateTime<Utc>>,
    /// Groups the user belongs to.
    #[row(skip)]
    pub group_ids: Vec<i64>,
    /// Who checks the password: `local` (Vespene's own hash) or the name of
    /// the authentication plugin entry that created the account. Read-only.
    #[serde(default = "local_source")]
    #[row(kept)]
    pub auth_source: String,
}

fn local_source() -> String {
    crate::settings::LOCAL_SOURCE.to_string()
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// Plain password; hashed with argon2id before it is stored.
    pub password: String,
    /// E-mail address.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Superuser flag.
    pub is_superuser: bool,
}

/// A group of users (owner and launch groups).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, Patch)]
pub struct Group {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// When created.
    #[row(kept)]
    pub created_at: Option<DateTime<Utc>>,
}

/// An API token as listed (the token itself is only shown once, on creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct ApiToken {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// A label.
    pub name: String,
    /// The first characters, to recognise it.
    pub prefix: String,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// Last use (to the minute: it moves at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A named, reusable JSON dict of variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct VariableSet {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A JSON object.
    #[row(masked, json_default = "{}")]
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

impl Default for VariableSet {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            variables: "{}".into(),
            created_by: None,
            owner_group_ids: vec![],
            shared: false,
        }
    }
}

/// A named template block injected as a variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct Snippet {
    /// Row id.
    pub id: i64,
    /// Unique name; becomes the variable name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A Jinja template.
    pub text: String,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

/// An SSH private key with an optional unlock password, both encrypted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct SshKey {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The private key (masked when read).
    pub private_key: Secret,
    /// Its passphrase (masked when read).
    pub unlock_password: Secret,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit or attach it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

/// A username and encrypted password for http(s) checkouts and imports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct ServiceLogin {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The login name.
    pub username: String,
    /// The password (masked when read).
    pub password: Secret,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit or attach it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

/// A named queue plus its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct WorkerPool {
    /// Row id.
    pub id: i64,
    /// Unique name; `vespene worker NAME` serves it.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A JSON object.
    #[row(masked, json_default = "{}")]
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Variable sets, applied in order.
    #[row(skip)]
    pub variable_set_ids: Vec<i64>,
    /// An isolation plugin key (`sandbox` unless set).
    pub isolation_method: String,
    /// For sudo isolation; `nobody` when empty.
    #[row(write = row::blank_as_null)]
    pub sudo_user: Option<String>,
    /// Whether builds may use the network (isolation plugins that can cut it
    /// off, such as `sandbox`, honour it).
    pub network: bool,
    /// Build-root permissions, e.g. `0x777`.
    pub permissions_hex: String,
    /// Worker poll interval.
    pub sleep_seconds: i64,
    /// QUEUED longer than this becomes ORPHANED.
    pub auto_abort_minutes: i64,
    /// Collapse duplicate queued builds of a project.
    pub build_latest: bool,
    /// Days to keep build rows (informational).
    pub build_object_shelf_life: i64,
    /// Days to keep build roots (informational).
    pub build_root_shelf_life: i64,
    /// Autoscaling on: housekeeping asks the pool's autoscaler to size it.
    pub autoscaling_enabled: bool,
    /// The autoscaler: a name in the `[plugins.autoscalers]` settings section.
    pub autoscaler: String,
    /// Weight of a running build in the demand the planner computes.
    pub running_weight: f64,
    /// Weight of a queued build in the demand the planner computes.
    pub queued_weight: f64,
    /// Workers added to the planned size.
    pub excess: i64,
    /// Factor applied to the weighted demand.
    pub multiplier: f64,
    /// The fewest workers the pool has.
    pub minimum: i64,
    /// The most workers the pool has (a plan above it is cut to it).
    pub maximum: i64,
    /// When the last autoscaling decision finished.
    #[row(kept)]
    pub last_autoscaled: Option<DateTime<Utc>>,
    /// Outcome of the last decision: 0 when it was applied, 1 when it failed.
    #[row(kept)]
    pub autoscaling_status: Option<i64>,
    /// The last decision, one line: the plan, its reason, or the error.
    #[serde(default)]
    #[row(kept)]
    pub autoscaling_message: String,
    /// Seconds between two decisions for the pool.
    pub reevaluate_seconds: i64,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            variables: "{}".into(),
            variable_set_ids: vec![],
            // The isolation the server recommends: a build sees neither the
            // server's files nor other builds (a `shell` pool is warned about).
            isolation_method: "sandbox".into(),
            sudo_user: None,
            network: true,
            permissions_hex: "0x777".into(),
            sleep_seconds: 10,
            auto_abort_minutes: 1440,
            build_latest: true,
            build_object_shelf_life: 365,
            build_root_shelf_life: 31,
            autoscaling_enabled: false,
            autoscaler: String::new(),
            running_weight: 1.0,
            queued_weight: 1.0,
            excess: 0,
            multiplier: 1.0,
            minimum: 0,
            maximum: 10,
            last_autoscaled: None,
            autoscaling_status: None,
            autoscaling_message: String::new(),
            reevaluate_seconds: 600,
            created_by: None,
            shared: false,
        }
    }
}

/// One worker host (or embedded worker), upserted by its uid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct Worker {
    /// Row id.
    pub id: i64,
    /// Stable unique id of the worker.
    pub worker_uid: String,
    /// Host name for build-root links.
    pub hostname: String,
    /// File-serving port.
    pub port: i64,
    /// Where its build roots are.
    pub build_root: String,
    /// First seen.
    pub first_checkin: Option<DateTime<Utc>>,
    /// Last seen.
    pub last_checkin: Option<DateTime<Utc>>,
    /// Serves build roots over http.
    pub fileserving_enabled: bool,
    /// The pools it serves, by name; empty when it serves every pool.
    #[serde(default)]
    #[row(read = super::autoscaling::decode_pools)]
    pub pools: Vec<String>,
}

/// A named pipeline step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct Stage {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A JSON object.
    #[row(masked, json_default = "{}")]
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Variable sets, applied in order.
    #[row(skip)]
    pub variable_set_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
    /// A pipeline run waits before this stage until someone allowed to
    /// `approve` the pipeline approves it.
    #[serde(default)]
    pub approval_required: bool,
}

impl Default for Stage {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            variables: "{}".into(),
            variable_set_ids: vec![],
            shared: false,
            approval_required: false,
        }
    }
}

/// An ordered chain of stages (any number of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct Pipeline {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Advancement on.
    pub enabled: bool,
    /// Stage ids in order.
    #[row(skip)]
    pub stage_ids: Vec<i64>,
    /// A JSON object.
    #[row(masked, json_default = "{}")]
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Variable sets, applied in order.
    #[row(skip)]
    pub variable_set_ids: Vec<i64>,
    /// When the last run completed.
    #[row(kept)]
    pub last_completed_date: Option<DateTime<Utc>>,
    /// The build whose success completed its last run.
    #[row(kept)]
    pub last_completed_by: Option<i64>,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Anyone logged in may use it (name it in their own objects); only its
    /// owner or a superuser sets this.
    #[serde(default)]
    pub shared: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            enabled: true,
            stage_ids: vec![],
            variables: "{}".into(),
            variable_set_ids: vec![],
            last_completed_date: None,
            last_completed_by: None,
            created_by: None,
            owner_group_ids: vec![],
            shared: false,
        }
    }
}

/// A project: a templated script, an optional repository and a worker pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct Project {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Pipeline membership.
    pub pipeline_id: Option<i64>,
    /// Opt out of pipeline triggering.
    pub pipeline_enabled: bool,
    /// Stage within the pipeline.
    pub stage_id: Option<i64>,
    /// Latest finished build (kept by the queue).
    #[row(read_only)]
    pub last_build_id: Option<i64>,
    /// The build in progress (kept by the queue).
    #[row(read_only)]
    pub active_build_id: Option<i64>,
    /// Latest successful build (kept by the queue).
    #[row(read_only)]
    pub last_successful_build_id: Option<i64>,
    /// Blank means no checkout.
    pub repo_url: String,
    /// Blank means the default branch.
    pub repo_branch: String,
    /// Clone submodules.
    pub recursive: bool,
    /// An scm plugin key: none, git, svn, ...
    pub scm_type: String,
    /// Webhooks may start it.
    pub webhook_enabled: bool,
    /// The webhook secret, if set (write-only: read as set or not set).
    #[row(write = row::empty_secret_cleared)]
    pub webhook_token: Secret,
    /// The Jinja build script.
    pub script: String,
    /// Minutes.
    pub timeout: i64,
    /// For container isolation.
    #[row(write = row::blank_as_null)]
    pub container_base_image: Option<String>,
    /// A JSON object.
    #[row(masked, json_default = "{}")]
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Variable sets, applied in order.
    #[row(skip)]
    pub variable_set_ids: Vec<i64>,
    /// A JSON list of questions.
    #[row(json_default = "[]")]
    #[serde(with = "json_doc::list")]
    #[schema(value_type = Vec<Object>)]
    pub launch_questions: String,
    /// Login for http(s) checkouts.
    pub scm_login_id: Option<i64>,
    /// SSH keys loaded for checkout.
    #[row(skip)]
    pub ssh_key_ids: Vec<i64>,
    /// The pool that runs it (required).
    pub worker_pool_id: i64,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
    /// Groups that may edit it.
    #[row(skip)]
    pub owner_group_ids: Vec<i64>,
    /// Groups that may start and stop it.
    #[row(skip)]
    pub launch_group_ids: Vec<i64>,
    /// Scheduling on.
    pub schedule_enabled: bool,
    /// Day flags, Monday first.
    pub monday: bool,
    /// Tuesday.
    pub tuesday: bool,
    /// Wednesday.
    pub wednesday: bool,
    /// Thursday.
    pub thursday: bool,
    /// Friday.
    pub friday: bool,
    /// Saturday.
    pub saturday: bool,
    /// Sunday.
    pub sunday: bool,
    /// UTC hours on weekdays, e.g. "0,8,16" or "9-17".
    pub weekday_start_hours: String,
    /// UTC minutes on weekdays, e.g. "0,30".
    pub weekday_start_minutes: String,
    /// UTC hours at weekends.
    pub weekend_start_hours: String,
    /// UTC minutes at weekends.
    pub weekend_start_minutes: String,
    /// Minimum minutes between scheduled builds.
    pub schedule_threshold: i64,
    /// A cron expression (5 fields: minute hour day-of-month month day-of-week),
    /// in addition to the day/hour/minute fields; empty for none.
    #[row(write = row::trimmed)]
    pub schedule_cron: String,
    /// The IANA time zone the schedule is read in (default UTC).
    #[row(write = row::utc_if_blank)]
    pub schedule_timezone: String,
    /// Names of per-project triggers (settings entries with `per_project = true`)
    /// this project runs, as a JSON list of strings.
    #[row(json_default = "[]")]
    #[serde(with = "json_doc::list")]
    #[schema(value_type = Vec<String>)]
    pub triggers: String,
    /// Keep the logs of this many most recent finished builds (pinned ones
    /// not counted); `None` (or 0): the administrator's default
    /// (`[retention] log_keep_builds`). See docs/retention.md.
    #[serde(default)]
    #[row(write = row::zero_as_null)]
    pub log_keep_builds: Option<i64>,
    /// Keep the logs of builds finished less than this many days ago; `None`
    /// (or 0): the administrator's default.
    #[serde(default)]
    #[row(write = row::zero_as_null)]
    pub log_keep_days: Option<i64>,
    /// Keep the build roots of this many most recent finished builds;
    /// `None` (or 0): the administrator's default.
    #[serde(default)]
    #[row(write = row::zero_as_null)]
    pub root_keep_builds: Option<i64>,
    /// Keep the build roots of builds finished less than this many days ago;
    /// `None` (or 0): the administrator's default.
    #[serde(default)]
    #[row(write = row::zero_as_null)]
    pub root_keep_days: Option<i64>,
    /// Whether `GET /api/v1/projects/{id}/badge.svg` answers without a login
    /// (default: no; then whoever may view the project may see its badge).
    #[serde(default)]
    pub public_badge: bool,
}

impl Default for Project {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            pipeline_id: None,
            pipeline_enabled: true,
            stage_id: None,
            last_build_id: None,
            active_build_id: None,
            last_successful_build_id: None,
            repo_url: String::new(),
            repo_branch: String::new(),
            recursive: true,
            scm_type: "none".into(),
            webhook_enabled: false,
            webhook_token: Secret::Empty,
            script: "#!/bin/bash\necho \"replace this section\"\n".into(),
            timeout: 60,
            container_base_image: None,
            variables: "{}".into(),
            variable_set_ids: vec![],
            launch_questions: "[]".into(),
            scm_login_id: None,
            ssh_key_ids: vec![],
            worker_pool_id: 0,
            created_by: None,
            owner_group_ids: vec![],
            launch_group_ids: vec![],
            schedule_enabled: false,
            monday: false,
            tuesday: false,
            wednesday: false,
            thursday: false,
            friday: false,
            saturday: false,
            sunday: false,
            weekday_start_hours: String::new(),
            weekday_start_minutes: String::new(),
            weekend_start_hours: String::new(),
            weekend_start_minutes: String::new(),
            schedule_threshold: 10,
            schedule_cron: String::new(),
            schedule_timezone: "UTC".into(),
            triggers: "[]".into(),
            log_keep_builds: None,
            log_keep_days: None,
            root_keep_builds: None,
            root_keep_days: None,
            public_badge: false,
        }
    }
}

/// Who owns a [`Project`]: its creator and its owner and launch groups
/// (`Store::project_owners`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectOwners {
    /// The project.
    pub id: i64,
    /// Its creator.
    pub created_by: Option<i64>,
    /// Groups that may edit it.
    pub owner_group_ids: Vec<i64>,
    /// Groups that may start and stop it.
    pub launch_group_ids: Vec<i64>,
}

/// An organization whose repositories are imported as projects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow, ToColumns, Patch)]
pub struct Organization {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// An organization plugin key, e.g. github.
    pub organization_type: String,
    /// The org's name at the provider.
    pub organization_identifier: String,
    /// Blank, or an API base URL (GitHub Enterprise).
    pub api_endpoint: String,
    /// Importing on.
    pub import_enabled: bool,
    /// Make stub projects for repositories without `.vespene`.
    pub import_without_dotfile: bool,
    /// Policy: rename projects from `.vespene`.
    pub overwrite_project_name: bool,
    /// Policy: replace scripts.
    pub overwrite_project_script: bool,
    /// Policy: replace other settings.
    pub overwrite_configurations: bool,
    /// Policy: create pipelines.
    pub allow_pipeline_definition: bool,
    /// Policy: set worker pools.
    pub allow_worker_pool_assignment: bool,
    /// SSH keys to attach to imported projects.
    #[row(skip)]
    pub auto_attach_ssh_key_ids: Vec<i64>,
    /// Pool for imported projects.
    pub default_worker_pool_id: i64,
    /// Pool whose workers run the import.
    pub worker_pool_id: i64,
    /// Import at the next chance.
    pub force_rescan: bool,
    /// Minutes between imports.
    pub refresh_minutes: i64,
    /// Login for the provider's API and clones.
    pub scm_login_id: Option<i64>,
    /// Latest import build.
    #[row(read_only)]
    pub last_build_id: Option<i64>,
    /// Import in progress.
    #[row(read_only)]
    pub active_build_id: Option<i64>,
    /// Latest successful import.
    #[row(read_only)]
    pub last_successful_build_id: Option<i64>,
    /// Creator.
    #[row(kept)]
    pub created_by: Option<i64>,
}

impl Default for Organization {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            description: String::new(),
            organization_type: "github".into(),
            organization_identifier: String::new(),
            api_endpoint: String::new(),
            import_enabled: true,
            import_without_dotfile: false,
            overwrite_project_name: true,
            overwrite_project_script: true,
            overwrite_configurations: true,
            allow_pipeline_definition: true,
            allow_worker_pool_assignment: true,
            auto_attach_ssh_key_ids: vec![],
            default_worker_pool_id: 0,
            worker_pool_id: 0,
            force_rescan: false,
            refresh_minutes: 120,
            scm_login_id: None,
            last_build_id: None,
            active_build_id: None,
            last_successful_build_id: None,
            created_by: None,
        }
    }
}

/// A build: one run of a project (or of an organization import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct Build {
    /// Row id.
    pub id: i64,
    /// The project (None for import builds).
    pub project_id: Option<i64>,
    /// The organization (import builds).
    pub organization_id: Option<i64>,
    /// The queue it is on.
    pub worker_pool_id: i64,
    /// Where it is in its life.
    pub status: BuildStatus,
    /// Revision checked out.
    pub revision: Option<String>,
    /// Who committed it.
    pub revision_username: Option<String>,
    /// The committer's e-mail address, when the scm plugin reports one.
    pub revision_email: Option<String>,
    /// When queued.
    pub queued_time: Option<DateTime<Utc>>,
    /// When claimed.
    pub start_time: Option<DateTime<Utc>>,
    /// When finished.
    pub end_time: Option<DateTime<Utc>>,
    /// The script's exit code.
    pub return_code: Option<i64>,
    /// The build root.
    pub working_dir: String,
    /// The rendered script, frozen at queue time.
    pub script: String,
    /// The merged variables (JSON object).
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub variables: String,
    /// Launch answers (JSON object).
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub launch_answers: String,
    /// Values set with `vespene/set` (JSON object).
    #[serde(with = "json_doc::object")]
    #[schema(value_type = Object)]
    pub output_variables: String,
    /// Who started it (None for webhooks, schedules, pipelines).
    pub created_by: Option<i64>,
    /// First build of the pipeline run.
    pub pipeline_origin_build_id: Option<i64>,
    /// The build that triggered this one.
    pub pipeline_parent_build_id: Option<i64>,
    /// The worker that claimed it.
    pub worker_id: Option<i64>,
    /// How many output lines it has (also after retention removed them).
    #[row(column = "output_seq")]
    pub output_lines: i64,
    /// Kept whatever the retention rules say, and not deletable until unpinned.
    #[serde(default)]
    pub pinned: bool,
    /// When retention removed its log (the record stays); `None`: not removed.
    #[serde(default)]
    pub log_removed_at: Option<DateTime<Utc>>,
    /// When retention removed its build root; `None`: not removed.
    #[serde(default)]
    pub root_removed_at: Option<DateTime<Utc>>,
    /// The triggers that failed for this build, one per line (`None`: none
    /// failed). A trigger failure never rewrites the build's own status.
    #[serde(default)]
    pub trigger_failures: Option<String>,
}

/// A build to create.
#[derive(Debug, Clone, Default)]
pub struct NewBuild {
    /// The project (None for import builds).
    pub project_id: Option<i64>,
    /// The organization (import builds).
    pub organization_id: Option<i64>,
    /// The queue.
    pub worker_pool_id: i64,
    /// QUEUED normally; RUNNING for import builds; FAILURE when the script
    /// could not be rendered. `None` means QUEUED.
    pub status: Option<BuildStatus>,
    /// The rendered script.
    pub script: String,
    /// Merged variables (JSON object; blank means `{}`).
    pub variables: String,
    /// Launch answers (JSON object; blank means `{}`).
    pub launch_answers: String,
    /// The secret values the script and variables refer to by placeholder:
    /// a JSON object of placeholder to encrypted value (blank means `{}`).
    /// Stored apart and never served; the worker substitutes them.
    pub secret_values: String,
    /// Who started it.
    pub created_by: Option<i64>,
    /// The triggering build, for pipelines.
    pub pipeline_parent_build_id: Option<i64>,
    /// The first build of the pipeline run; defaults to the new build itself.
    pub pipeline_origin_build_id: Option<i64>,
    /// Refuse (a [`super::StoreError::Conflict`] naming it) when the project
    /// has a QUEUED or RUNNING build: a project runs one build at a time.
    pub one_at_a_time: bool,
    /// The audit record of this start (`build.start`), written in the
    /// build's own transaction: both are kept or neither is.
    pub audit: Option<BuildStartAudit>,
}

/// Who started a build and what the audit log says of it; the record's
/// object is the new build, named after `object_name`.
#[derive(Debug, Clone, Default)]
pub struct BuildStartAudit {
    /// Who asked.
    pub actor: super::AuditActor,
    /// The name the record gives the build (its project's).
    pub object_name: String,
    /// The record's details.
    pub details: serde_json::Value,
}

/// A pipeline run's wait before a stage that needs approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct PipelineApproval {
    /// The run (its origin build).
    pub origin_build_id: i64,
    /// The stage that waits.
    pub stage_id: i64,
    /// The pipeline.
    pub pipeline_id: i64,
    /// The build of the previous stage whose success reached the stage.
    pub parent_build_id: i64,
    /// When the run started waiting.
    pub requested_at: DateTime<Utc>,
    /// Who approved (`None`: still waiting).
    pub approved_by: Option<i64>,
    /// When.
    pub approved_at: Option<DateTime<Utc>>,
}

/// What a build checked out, as its scm plugin reported it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckedOut<'a> {
    /// The revision (full, or short when that is all there is).
    pub revision: Option<&'a str>,
    /// Who committed it.
    pub committer: Option<&'a str>,
    /// The committer's e-mail address.
    pub committer_email: Option<&'a str>,
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// The script's standard output (and merged standard error).
    Stdout,
    /// Standard error, when kept apart.
    Stderr,
    /// Vespene's own messages: commands run, checkout, triggers.
    Message,
}

impl OutputStream {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::Message => "message",
        }
    }

    /// Parses the stored spelling (unknown values read as stdout).
    pub fn parse(s: &str) -> Self {
        match s {
            "stderr" => OutputStream::Stderr,
            "message" => OutputStream::Message,
            _ => OutputStream::Stdout,
        }
    }
}

/// One stored line of build output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputLine {
    /// 1, 2, 3, ... within the build.
    pub seq: i64,
    /// Which stream.
    pub stream: OutputStream,
    /// When it was stored.
    #[serde(serialize_with = "rfc3339")]
    pub ts: DateTime<Utc>,
    /// The text, without the newline.
    pub text: String,
}

/// A time as chrono's own `Serialize` spells it (RFC 3339, UTC as `Z`,
/// fractions of a second as needed), written whole before it is escaped: a
/// page of output has one per line, and serde's piecewise `collect_str` cost
/// a tenth of an output read.
fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A JSON document kept as text (variables, launch questions, triggers, a
/// build's answers and outputs): shown in JSON as the document itself, and
/// read from either the document or, as older clients send it, the document
/// as a JSON string (which `validate` then checks).
mod json_doc {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    fn show<S: Serializer>(text: &str, empty: Value, s: S) -> Result<S::Ok, S::Error> {
        if text.trim().is_empty() {
            return empty.serialize(s);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(document) => document.serialize(s),
            // Not JSON (never saved so: validation refuses it): shown as it is.
            Err(_) => s.serialize_str(text),
        }
    }

    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(text) => text,
            Value::Null => String::new(),
            document => document.to_string(),
        })
    }

    /// A JSON object (blank text shows as `{}`).
    pub mod object {
        use super::*;

        pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
            show(text, Value::Object(Default::default()), s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            read(d)
        }
    }

    /// A JSON list (blank text shows as `[]`).
    pub mod list {
        use super::*;

        pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
            show(text, Value::Array(Vec::new()), s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            read(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output line's time reads exactly as chrono's own serialization
    /// wrote it, whatever its precision.
    #[test]
    fn output_times_are_spelled_as_chrono_spells_them() {
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 5] {
            let at = DateTime::from_timestamp(1_764_979_200, nanos).unwrap();
            let line = OutputLine { seq: 1, stream: OutputStream::Stdout, ts: at, text: String::new() };
            let written = serde_json::to_value(&line).unwrap();
            assert_eq!(written["ts"], serde_json::to_value(at).unwrap(), "{nanos} ns");
        }
    }
}
