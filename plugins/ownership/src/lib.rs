//! The `ownership` authorization plugin: superusers may do everything, the
//! creator and the owner groups of an object manage it, launch groups start
//! and stop builds, and a few kinds are for superusers only.
//!
//! ```toml
//! [plugins.authorization.ownership]
//! library = "ownership"
//! filter_view = true    # the default; false shows everyone's projects and builds
//! ```
//!
//! Its one parameter, `filter_view` (`true` or `false`, default `true`, as in
//! the original Vespene), narrows listings and `view` as described below. Any
//! other parameter is a configuration error.
//!
//! # The request contract
//!
//! The API asks the authorization chain about **every** action, and every
//! configured authorization plugin must allow it. This plugin expects:
//!
//! * `user`: `None` for anonymous requests, which are refused everything (and
//!   `filter_list` answers no ids). Group names are matched exactly.
//! * `action`: `list`, `view`, `create`, `edit`, `delete`, `start`, `stop`,
//!   `use` (interface 1.2: naming the object in another one) or `approve`
//!   (interface 1.3: letting a pipeline run past a manual approval stage).
//! * `kind`: `project`, `build`, `pipeline`, `stage`, `worker_pool`,
//!   `snippet`, `variable_set`, `ssh_key`, `service_login`, `organization`,
//!   `user`, `group` or `api_token`.
//! * `object`: absent for `list` and `create`, otherwise a JSON object with
//!   - `id`: the object's id (for `user`, the user's id: required there);
//!   - `created_by`: the creating user's id, or `null`;
//!   - `owner_groups` and `launch_groups`, where the kind has them: lists of
//!     group **names** (absent or `null` means none);
//!   - `shared`: `true` when the owner lets anyone use the object (absent or
//!     `null` means `false`);
//!   - for a `build`: `created_by`, `owner_groups` and `launch_groups` are
//!     those of the build's **project** (a build belongs to its project), and
//!     the build's own creator is `build_created_by` (a user id or `null`);
//!   - for `edit` of a `user`: `changes`, the list of the names of the fields
//!     being changed (`["email", "password"]`). Pass `[]` to ask whether the
//!     row may be edited at all. Absent or `null` `changes` are refused: the
//!     plugin cannot tell that no privilege is being raised.
//! * `start` is asked with `kind = "project"` and the project as object;
//!   `stop` with `kind = "build"` and the build (with its project's fields, as
//!   above) as object.
//! * `filter_list(request, candidates)`: `candidates` are objects shaped like
//!   `object`; the answer is the ids of those the user may see (for `list`),
//!   or, for any other action, those the action is allowed on. Candidates
//!   without an integer `id` are never answered.
//!
//! An action or kind not listed above is refused to non-superusers (new kinds
//! are superuser-only until this plugin learns them). A request that breaks
//! the contract (no object where one is needed, `owner_groups` holding
//! numbers instead of names, `created_by` not a number or `null`, `changes`
//! not a list of names) fails with an error naming the field, rather than
//! being answered.
//!
//! # The rules
//!
//! For a logged-in user `u`, "owns" means `object.created_by == u.id` or `u`
//! is in one of `object.owner_groups`; "launches" means `u` is in one of
//! `object.launch_groups`.
//!
//! 1. Superusers may do everything.
//! 2. `create`: allowed for every kind but `build` (builds come from `start`),
//!    `worker_pool`, `user`, `group`, `stage` and `organization`, which are for
//!    superusers only.
//! 3. `view`: allowed, except that a `user` row is visible only to that user,
//!    an `api_token` only to its owner (`created_by`), and, with
//!    `filter_view`, the kinds filtered in listings (rule 6) only when they
//!    would be listed.
//! 4. `edit` and `delete`:
//!    * `worker_pool`, `stage`, `organization`, `group`: superusers only;
//!    * `build`: never edited; deleted by those who own its project;
//!    * `user`: a user edits only their own row and never its `is_superuser`
//!      (or `superuser`) or `groups` fields: an edit whose `changes` name one
//!      of them is refused. Deleting users is for superusers. The `created_by`
//!      and `owner_groups` of a user row grant nothing;
//!    * `api_token`: only its owner (`created_by`);
//!    * every other kind: those who own the object.
//! 5. `start` (a `project`): those who own it or launch it. `stop` (a
//!    `build`): those who own or launch its project, and the build's own
//!    creator (`build_created_by`). Other kinds are never started or stopped.
//! 6. `list` is allowed. `filter_list` keeps every candidate, except that
//!    `api_token`s and `user` rows are always only the user's own (the server
//!    shows other users by username only). With `filter_view = true` (the
//!    default) it keeps only: the user's own `user` row; the `project`s they
//!    own or launch; the `build`s of such projects, and the builds they
//!    created; the `ssh_key`s and `service_login`s they own or that are
//!    `shared`. Other kinds are not filtered.
//! 7. `use` (naming the object in a project, pipeline, stage, pool or
//!    organization being saved, or a build rendering a snippet): for
//!    `ssh_key`, `service_login`, `variable_set`, `worker_pool`, `pipeline`,
//!    `stage` and `snippet`, those who own it, and everyone logged in when it
//!    is `shared`. Other kinds are never used. Setting or clearing `shared`
//!    is an `edit` whose `changes` name `shared`: only those who own the
//!    object (rule 4: superusers alone for pools and stages).
//! 8. `approve` (a `pipeline` waiting at a manual approval stage): those who
//!    own the pipeline. Other kinds are never approved. To let only some of
//!    them approve (a release team), add `group-required` with
//!    `pipeline = { approve = ["release"] }`: every plugin must allow.
//!
//! # Differences from the original Vespene
//!
//! * The original let a user edit their own row with any fields, relying on
//!   disabled HTML inputs: a crafted form could set `is_superuser` or
//!   `groups`. Here such an edit is refused.
//! * `stop` is checked as `stop` (the original checked `view`, so anyone who
//!   could see a build could stop it).
//! * Builds can be deleted by their project's owners; stages and organizations
//!   can only be created by superusers; user rows of others cannot be viewed;
//!   API tokens did not exist.

use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, AccessRequest, Authorization, Kind, PluginResult, UserInfo};

/// The plugin's name, for messages.
const NAME: &str = "ownership";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["filter_view"];

/// The actions and object kinds of the authorization contract.
pub use vespene_plugin_api::{ACCESS_ACTIONS as ACTIONS, ACCESS_KINDS as KINDS};

/// Kinds only superusers create.
const SUPERUSER_CREATE: &[&str] = &["build", "worker_pool", "user", "group", "stage", "organization"];

/// Kinds only superusers edit and delete.
const SUPERUSER_EDIT: &[&str] = &["worker_pool", "stage", "organization", "group"];

/// Kinds other objects name, and so may be used.
const USABLE: &[&str] = &["ssh_key", "service_login", "variable_set", "worker_pool", "pipeline", "stage", "snippet"];

/// Fields of a user row that only superusers may change.
const PRIVILEGED_USER_FIELDS: &[&str] = &["is_superuser", "superuser", "groups"];

/// The `ownership` authorization plugin.
#[derive(Debug)]
pub struct Ownership {
    /// Whether listings and `view` hide other people's objects.
    filter_view: bool,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership { filter_view: true }
    }
}

/// The fields of an object the rules read.
#[derive(Debug, Default)]
struct Subject<'a> {
    id: Option<i64>,
    created_by: Option<i64>,
    build_created_by: Option<i64>,
    owner_groups: Vec<&'a str>,
    launch_groups: Vec<&'a str>,
    shared: bool,
}

/// An optional user id field: absent or `null` is `None`.
fn user_id(object: &Map<String, Value>, field: &str) -> PluginResult<Option<i64>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| format!("object.{field} must be a user id or null, not {v}")),
    }
}

/// An optional list of group names: absent or `null` is empty.
fn group_names<'a>(object: &'a Map<String, Value>, field: &str) -> PluginResult<Vec<&'a str>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().ok_or_else(|| format!("object.{field} must list group names (strings), not {g}")))
            .collect(),
        Some(v) => Err(format!("object.{field} must be a list of group names, not {v}")),
    }
}

impl<'a> Subject<'a> {
    fn parse(object: &'a Value) -> PluginResult<Self> {
        let Value::Object(fields) = object else {
            return Err(format!("the object must be a JSON object, not {object}"));
        };
        Ok(Subject {
            id: fields.get("id").and_then(Value::as_i64),
            created_by: user_id(fields, "created_by")?,
            build_created_by: user_id(fields, "build_created_by")?,
            owner_groups: group_names(fields, "owner_groups")?,
            launch_groups: group_names(fields, "launch_groups")?,
            shared: match fields.get("shared") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(format!("object.shared must be true or false, not {v}")),
            },
        })
    }

    /// The creator, or a member of an owner group.
    fn owned_by(&self, user: &UserInfo) -> bool {
        self.created_by == Some(user.id) || in_any(user, &self.owner_groups)
    }

    /// A member of a launch group.
    fn launched_by(&self, user: &UserInfo) -> bool {
        in_any(user, &self.launch_groups)
    }

    /// The user's own row (kind `user`), whose id the contract requires.
    fn is_user(&self, user: &UserInfo) -> PluginResult<bool> {
        self.id.map(|id| id == user.id).ok_or_else(|| "object.id (the user's id) is required for kind user".to_string())
    }
}

/// Whether `user` is in one of `groups`.
fn in_any(user: &UserInfo, groups: &[&str]) -> bool {
    user.groups.iter().any(|g| groups.contains(&g.as_str()))
}

/// Whether a user edit (its `changes`) touches a privileged field. Unknown
/// changes count as privileged.
fn raises_privileges(object: &Value) -> PluginResult<bool> {
    match object.get("changes") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Array(fields)) => {
            for field in fields {
                let name = field
                    .as_str()
                    .ok_or_else(|| format!("object.changes must list field names (strings), not {field}"))?;
                if PRIVILEGED_USER_FIELDS.contains(&name) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Some(v) => Err(format!("object.changes must be a list of field names, not {v}")),
    }
}

impl Ownership {
    /// The whole decision for one action on one (optional) object.
    pub fn decide(&self, request: &AccessRequest, object: Option<&Value>) -> PluginResult<bool> {
        let Some(user) = &request.user else { return Ok(false) };
        if user.superuser {
            return Ok(true);
        }
        let (kind, action) = (request.kind.as_str(), request.action.as_str());
        if !KINDS.contains(&kind) || !ACTIONS.contains(&action) {
            return Ok(false);
        }
        match action {
            "list" => return Ok(true),
            "create" => return Ok(!SUPERUSER_CREATE.contains(&kind)),
            _ => {}
        }
        let object = object.ok_or_else(|| format!("the request to {action} a {kind} carries no object"))?;
        let subject = Subject::parse(object)?;
        Ok(match (action, kind) {
            ("view", _) => self.visible(user, kind, &subject)?,
            ("edit" | "delete", k) if SUPERUSER_EDIT.contains(&k) => false,
            ("edit", "build") => false,
            ("edit", "user") => subject.is_user(user)? && !raises_privileges(object)?,
            ("delete", "user") => false,
            ("edit" | "delete", "api_token") => subject.created_by == Some(user.id),
            ("edit" | "delete", _) => subject.owned_by(user),
            ("start", "project") => subject.owned_by(user) || subject.launched_by(user),
            ("use", k) if USABLE.contains(&k) => subject.owned_by(user) || subject.shared,
            ("stop", "build") => {
                subject.owned_by(user) || subject.launched_by(user) || subject.build_created_by == Some(user.id)
            }
            ("approve", "pipeline") => subject.owned_by(user),
            _ => false,
        })
    }

    /// Whether a non-superuser `user` may see an object of `kind` (by `view`
    /// or in a listing: the same rule).
    fn visible(&self, user: &UserInfo, kind: &str, subject: &Subject<'_>) -> PluginResult<bool> {
        Ok(match kind {
            "api_token" => subject.created_by == Some(user.id),
            "user" => subject.is_user(user)?,
            _ if !self.filter_view => true,
            "project" => subject.owned_by(user) || subject.launched_by(user),
            "build" => subject.owned_by(user) || subject.launched_by(user) || subject.build_created_by == Some(user.id),
            "ssh_key" | "service_login" => subject.owned_by(user) || subject.shared,
            _ => true,
        })
    }
}

impl Authorization for Ownership {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Authorization, NAME, PARAMETERS)?;
        let filter_view = match params.get("filter_view") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("parameter 'filter_view' must be true or false, not {other}")),
        };
        Ok(Ownership { filter_view })
    }

    fn check(&self, request: &AccessRequest) -> PluginResult<bool> {
        self.decide(request, request.object.as_ref())
    }

    fn filter_list(&self, request: &AccessRequest, candidates: &[Value]) -> PluginResult<Vec<i64>> {
        let with_ids = candidates.iter().filter_map(|c| c.get("id").and_then(Value::as_i64).map(|id| (id, c)));
        if request.action != "list" {
            // Any other action: the candidates it is allowed on.
            let mut ids = Vec::new();
            for (id, candidate) in with_ids {
                if self.decide(request, Some(candidate))? {
                    ids.push(id);
                }
            }
            return Ok(ids);
        }
        if !self.decide(request, None)? {
            return Ok(Vec::new());
        }
        let Some(user) = request.user.as_ref().filter(|u| !u.superuser) else {
            return Ok(with_ids.map(|(id, _)| id).collect());
        };
        let mut ids = Vec::new();
        for (id, candidate) in with_ids {
            if self.visible(user, &request.kind, &Subject::parse(candidate)?)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

export_plugin! {
    name: "ownership",
    description: "Authorization by superuser, creator, owner groups and launch groups",
    authorization: Ownership,
}

#[cfg(test)]
mod tests;
