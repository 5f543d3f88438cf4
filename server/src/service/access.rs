//! Who is asking and what they may do: the [`Principal`] of an operation,
//! and the `authorization` plugin chain (every configured plugin must
//! allow), asked about an object as the plugins see it: its id, its creator,
//! its owner and launch groups by name, and whether it is shared.

use std::sync::Arc;

use serde_json::{json, Value};
use vespene_plugin_api::{AccessRequest, UserInfo};

use super::{Error, Service};
use crate::store::{
    Build, Group, Id, Organization, Pipeline, Project, ProjectOwners, ServiceLogin, Snippet, SshKey, Stage, User,
    VariableSet, WorkerPool,
};

/// Who an operation is for.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Nobody.
    Anonymous,
    /// A browser session.
    Session {
        /// The user.
        user: User,
        /// The session id (from the cookie).
        sid: String,
    },
    /// An API token.
    Token {
        /// The user.
        user: User,
        /// The token itself (kept when its user changes their password with it).
        token: String,
        /// Every group, read with the token (authorization names groups by
        /// these): no request with a token reads the groups again.
        groups: Arc<Vec<Group>>,
    },
}

impl Principal {
    /// The user, if any.
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::Anonymous => None,
            Principal::Session { user, .. } | Principal::Token { user, .. } => Some(user),
        }
    }

    /// The user, or a failure saying to log in.
    pub fn require(&self) -> Result<&User, Error> {
        self.user().ok_or_else(Error::unauthenticated)
    }

    /// The user if they are a superuser; `why` says what only superusers may do.
    pub fn require_superuser(&self, why: &str) -> Result<&User, Error> {
        let user = self.require()?;
        if !user.is_superuser {
            return Err(Error::forbidden(why));
        }
        Ok(user)
    }
}

/// The object as authorization plugins see it: id, creator, and group names,
/// with the groups already looked up (listings do it once).
pub fn authz_object_with(groups: &[Group], kind: &str, value: &Value) -> Value {
    let names = |ids: &Value| -> Value {
        let ids: Vec<i64> = ids.as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
        json!(groups.iter().filter(|g| ids.contains(&g.id)).map(|g| g.name.clone()).collect::<Vec<_>>())
    };
    let created_by = if kind == "user" { value["id"].clone() } else { value["created_by"].clone() };
    json!({
        "id": value["id"],
        "created_by": created_by,
        "owner_groups": names(&value["owner_group_ids"]),
        "launch_groups": names(&value["launch_group_ids"]),
        "shared": value["shared"].as_bool().unwrap_or(false),
    })
}

/// What the authorization chain is told of a stored object: its id, its
/// creator, its owner and launch groups, and whether it is shared. A kind
/// without one of these answers none (`null`, no groups, not shared), as the
/// object's JSON would.
pub trait Owned {
    /// Its id.
    fn object_id(&self) -> Id;
    /// Who created it.
    fn creator(&self) -> Option<Id> {
        None
    }
    /// Groups that may edit it.
    fn owner_groups(&self) -> &[Id] {
        &[]
    }
    /// Groups that may start and stop it.
    fn launch_groups(&self) -> &[Id] {
        &[]
    }
    /// Whether anyone logged in may use it.
    fn is_shared(&self) -> bool {
        false
    }
}

macro_rules! owned {
    ($ty:ty $(, creator = $creator:ident)? $(, owners = $owners:ident)? $(, launchers = $launchers:ident)? $(, shared = $shared:ident)?) => {
        impl Owned for $ty {
            fn object_id(&self) -> Id {
                self.id
            }
            $(fn creator(&self) -> Option<Id> {
                self.$creator
            })?
            $(fn owner_groups(&self) -> &[Id] {
                &self.$owners
            })?
            $(fn launch_groups(&self) -> &[Id] {
                &self.$launchers
            })?
            $(fn is_shared(&self) -> bool {
                self.$shared
            })?
        }
    };
}

owned!(Project, creator = created_by, owners = owner_group_ids, launchers = launch_group_ids);
owned!(ProjectOwners, creator = created_by, owners = owner_group_ids, launchers = launch_group_ids);
owned!(Pipeline, creator = created_by, owners = owner_group_ids, shared = shared);
owned!(Stage, shared = shared);
owned!(WorkerPool, creator = created_by, shared = shared);
owned!(VariableSet, creator = created_by, owners = owner_group_ids, shared = shared);
owned!(Snippet, creator = created_by, owners = owner_group_ids, shared = shared);
owned!(SshKey, creator = created_by, owners = owner_group_ids, shared = shared);
owned!(ServiceLogin, creator = created_by, owners = owner_group_ids, shared = shared);
owned!(Organization, creator = created_by);

/// [`authz_object_with`] from the typed object, without its JSON.
pub fn authz_object_of(groups: &[Group], object: &impl Owned) -> Value {
    let names =
        |ids: &[Id]| -> Vec<&str> { groups.iter().filter(|g| ids.contains(&g.id)).map(|g| g.name.as_str()).collect() };
    json!({
        "id": object.object_id(),
        "created_by": object.creator(),
        "owner_groups": names(object.owner_groups()),
        "launch_groups": names(object.launch_groups()),
        "shared": object.is_shared(),
    })
}

/// The user as authorization plugins see them, their group names from `groups`.
pub fn user_info_with(groups: &[Group], user: &User) -> UserInfo {
    UserInfo {
        id: user.id,
        username: user.username.clone(),
        superuser: user.is_superuser,
        groups: groups.iter().filter(|g| user.group_ids.contains(&g.id)).map(|g| g.name.clone()).collect(),
    }
}

/// What the authorization plugins see of a build: its project's owners and
/// launchers, and who started it.
pub fn build_authz_object(build: &Build, mut project: Value) -> Value {
    project["id"] = json!(build.id);
    project["project_id"] = json!(build.project_id);
    project["build_created_by"] = json!(build.created_by);
    project
}

impl Service {
    /// Every group, to name groups to the authorization chain: as read with
    /// the principal's token, else from the store.
    pub async fn groups_for(&self, principal: &Principal) -> crate::store::Result<Arc<Vec<Group>>> {
        match principal {
            Principal::Token { groups, .. } => Ok(groups.clone()),
            _ => Ok(Arc::new(self.store().list_groups().await?)),
        }
    }

    /// Asks every authorization plugin whether the principal may `action`
    /// an object of `kind` (`object` as [`authz_object_with`] makes it);
    /// all must allow.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: &str,
        kind: &str,
        object: Option<Value>,
    ) -> Result<(), Error> {
        let groups = match principal.user() {
            Some(_) => self.groups_for(principal).await?,
            None => Arc::default(),
        };
        self.authorize_with(principal, &groups, action, kind, object).await
    }

    /// [`Service::authorize`] with every group already read: the user's
    /// group names come from `groups`.
    pub async fn authorize_with(
        &self,
        principal: &Principal,
        groups: &[Group],
        action: &str,
        kind: &str,
        object: Option<Value>,
    ) -> Result<(), Error> {
        let user = principal.user().map(|u| user_info_with(groups, u));
        let anonymous = user.is_none();
        let request = AccessRequest { user, action: action.into(), kind: kind.into(), object };
        // Called in place: authorization plugins answer from the request alone,
        // quickly (docs/plugins/authorization.md), and a hand-off to another
        // thread would cost more than the answer.
        let verdict = self.registry().access_check(&request);
        verdict.map_err(|m| if anonymous { Error::unauthenticated() } else { Error::forbidden(m) })
    }

    /// Asks whether the principal may `action` the stored object `value` (as
    /// it serializes) of `kind`, with `extra` fields added to what the
    /// plugins see of it; the groups are read once for the object and the user.
    pub async fn authorize_on(
        &self,
        principal: &Principal,
        action: &str,
        kind: &str,
        value: &Value,
        extra: &[(&str, Value)],
    ) -> Result<(), Error> {
        let groups = self.groups_for(principal).await?;
        let mut object = authz_object_with(&groups, kind, value);
        for (name, v) in extra {
            object[*name] = v.clone();
        }
        self.authorize_with(principal, &groups, action, kind, Some(object)).await
    }

    /// The ids among `candidates` that every authorization plugin lets the principal see.
    pub async fn visible(&self, principal: &Principal, kind: &str, candidates: Vec<Value>) -> Result<Vec<i64>, Error> {
        let groups = match principal.user() {
            Some(_) => self.groups_for(principal).await?,
            None => Arc::default(),
        };
        self.visible_with(principal, &groups, kind, candidates).await
    }

    /// [`Service::visible`] with every group already read.
    pub async fn visible_with(
        &self,
        principal: &Principal,
        groups: &[Group],
        kind: &str,
        candidates: Vec<Value>,
    ) -> Result<Vec<i64>, Error> {
        let user = principal.user().map(|u| user_info_with(groups, u));
        self.filter_by(user, "list", kind, candidates).await
    }

    /// The ids among `candidates` on which every authorization plugin allows
    /// `action` to `user` (the plugins' `filter_list`).
    pub async fn filter_by(
        &self,
        user: Option<UserInfo>,
        action: &str,
        kind: &str,
        candidates: Vec<Value>,
    ) -> Result<Vec<i64>, Error> {
        let request = AccessRequest { user, action: action.into(), kind: kind.into(), object: None };
        // In place, as in `authorize_with`.
        self.registry().access_filter(&request, &candidates).map_err(Error::forbidden)
    }

    /// The user as authorization plugins see them.
    pub async fn user_info(&self, user: &User) -> Result<UserInfo, Error> {
        Ok(user_info_with(&self.store().list_groups().await?, user))
    }

    /// A build and the object the authorization chain is asked about for it.
    pub async fn build_object(&self, id: Id) -> Result<(Build, Value), Error> {
        let (build, object, _) = self.build_and_groups(&Principal::Anonymous, id).await?;
        Ok((build, object))
    }

    /// A build, its authorization object and every group (as `principal` has them).
    async fn build_and_groups(&self, principal: &Principal, id: Id) -> Result<(Build, Value, Arc<Vec<Group>>), Error> {
        let (found, groups) =
            futures_util::future::try_join(self.store().build_with_owners(id), self.groups_for(principal))
                .await
                .map_err(Error::from)?;
        let (build, owners) = found.ok_or_else(|| Error::not_found(&format!("build {id}")))?;
        let project = match owners {
            Some(owners) => authz_object_of(&groups, &owners),
            None => json!({}),
        };
        let object = build_authz_object(&build, project);
        Ok((build, object, groups))
    }

    /// A build, once the principal may `action` it.
    pub async fn build_for(&self, principal: &Principal, id: Id, action: &str) -> Result<Build, Error> {
        let (build, object, groups) = self.build_and_groups(principal, id).await?;
        self.authorize_with(principal, &groups, action, "build", Some(object)).await?;
        Ok(build)
    }

    /// What the authorization plugins see of each build of a page, from
    /// `groups`: one look at each project, however many builds the page shows.
    async fn build_objects(&self, groups: &[Group], builds: &[Build]) -> Result<Vec<Value>, Error> {
        let mut projects: std::collections::HashMap<Id, Value> = std::collections::HashMap::new();
        let mut objects = Vec::with_capacity(builds.len());
        for b in builds {
            let project = match b.project_id {
                Some(pid) => match projects.get(&pid) {
                    Some(object) => object.clone(),
                    None => {
                        let object = match self.store().project_owners(pid).await? {
                            Some(owners) => authz_object_of(groups, &owners),
                            None => json!({}),
                        };
                        projects.insert(pid, object.clone());
                        object
                    }
                },
                None => json!({}),
            };
            objects.push(build_authz_object(b, project));
        }
        Ok(objects)
    }

    /// The builds among `builds` the principal may see, each with its
    /// authorization object (in the order given); `groups` is every group.
    pub(super) async fn visible_builds(
        &self,
        principal: &Principal,
        groups: &[Group],
        builds: Vec<Build>,
    ) -> Result<Vec<(Build, Value)>, Error> {
        let objects = self.build_objects(groups, &builds).await?;
        let visible = self.visible_with(principal, groups, "build", objects.clone()).await?;
        Ok(builds.into_iter().zip(objects).filter(|(b, _)| visible.contains(&b.id)).collect())
    }

    /// A pipeline, after asking whether the principal may `action` it.
    pub async fn pipeline_for(&self, principal: &Principal, id: Id, action: &str) -> Result<Pipeline, Error> {
        let pipeline =
            self.store().get_pipeline(id).await?.ok_or_else(|| Error::not_found(&format!("pipeline {id}")))?;
        let value = serde_json::to_value(&pipeline).unwrap_or_default();
        self.authorize_on(principal, action, "pipeline", &value, &[]).await?;
        Ok(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<Group> {
        [(1, "ops"), (2, "dev"), (3, "qa")]
            .into_iter()
            .map(|(id, name)| Group { id, name: name.into(), created_at: None })
            .collect()
    }

    /// The typed view must tell the plugins exactly what the JSON view does.
    fn same<T: Owned + serde::Serialize>(kind: &str, object: T) {
        let groups = groups();
        let from_json = authz_object_with(&groups, kind, &serde_json::to_value(&object).unwrap());
        assert_eq!(authz_object_of(&groups, &object), from_json, "{kind}");
    }

    #[test]
    fn the_typed_authorization_object_is_the_json_one() {
        let (owners, launchers) = (vec![3, 1], vec![2]);
        same(
            "project",
            Project {
                id: 7,
                created_by: Some(4),
                owner_group_ids: owners.clone(),
                launch_group_ids: launchers,
                ..Project::default()
            },
        );
        same(
            "pipeline",
            Pipeline {
                id: 8,
                created_by: Some(4),
                owner_group_ids: owners.clone(),
                shared: true,
                ..Pipeline::default()
            },
        );
        same("stage", Stage { id: 9, shared: true, ..Stage::default() });
        same("worker_pool", WorkerPool { id: 10, created_by: Some(5), shared: true, ..WorkerPool::default() });
        same(
            "variable_set",
            VariableSet {
                id: 11,
                created_by: None,
                owner_group_ids: owners.clone(),
                shared: true,
                ..VariableSet::default()
            },
        );
        same("snippet", Snippet { id: 12, created_by: Some(4), owner_group_ids: owners.clone(), ..Snippet::default() });
        same(
            "ssh_key",
            SshKey { id: 13, created_by: Some(4), owner_group_ids: owners.clone(), shared: true, ..SshKey::default() },
        );
        same(
            "service_login",
            ServiceLogin { id: 14, created_by: Some(4), owner_group_ids: owners, ..ServiceLogin::default() },
        );
        same("organization", Organization { id: 15, created_by: Some(6), ..Organization::default() });
    }
}
