//! Who is asking and what they may do: the [`Principal`] of an operation,
//! and the `authorization` plugin chain (every configured plugin must
//! allow), asked about an object as the plugins see it: its id, its creator,
//! its owner and launch groups by name, and whether it is shared.

use serde_json::{json, Value};
use vespene_plugin_api::{AccessRequest, UserInfo};

use super::{Error, Service};
use crate::store::{Build, Group, Id, Pipeline, User};

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

/// What the authorization plugins see of a build: its project's owners and
/// launchers, and who started it.
pub fn build_authz_object(build: &Build, mut project: Value) -> Value {
    project["id"] = json!(build.id);
    project["project_id"] = json!(build.project_id);
    project["build_created_by"] = json!(build.created_by);
    project
}

impl Service {
    /// Asks every authorization plugin whether the principal may `action`
    /// an object of `kind` (`object` as [`Service::authz_object`] makes it);
    /// all must allow.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: &str,
        kind: &str,
        object: Option<Value>,
    ) -> Result<(), Error> {
        let user = match principal.user() {
            Some(u) => Some(self.user_info(u).await?),
            None => None,
        };
        let anonymous = user.is_none();
        let request = AccessRequest { user, action: action.into(), kind: kind.into(), object };
        let registry = self.registry().clone();
        let verdict =
            tokio::task::spawn_blocking(move || registry.access_check(&request)).await.map_err(Error::internal)?;
        verdict.map_err(|m| if anonymous { Error::unauthenticated() } else { Error::forbidden(m) })
    }

    /// The ids among `candidates` that every authorization plugin lets the principal see.
    pub async fn visible(&self, principal: &Principal, kind: &str, candidates: Vec<Value>) -> Result<Vec<i64>, Error> {
        let user = match principal.user() {
            Some(u) => Some(self.user_info(u).await?),
            None => None,
        };
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
        let registry = self.registry().clone();
        let allowed = tokio::task::spawn_blocking(move || registry.access_filter(&request, &candidates))
            .await
            .map_err(Error::internal)?;
        allowed.map_err(Error::forbidden)
    }

    /// The user as authorization plugins see them.
    pub async fn user_info(&self, user: &User) -> Result<UserInfo, Error> {
        let groups = self.store().list_groups().await?;
        Ok(UserInfo {
            id: user.id,
            username: user.username.clone(),
            superuser: user.is_superuser,
            groups: groups.into_iter().filter(|g| user.group_ids.contains(&g.id)).map(|g| g.name).collect(),
        })
    }

    /// The object as authorization plugins see it (see [`authz_object_with`]).
    pub async fn authz_object(&self, kind: &str, value: Value) -> Result<Value, Error> {
        let groups = self.store().list_groups().await?;
        Ok(authz_object_with(&groups, kind, &value))
    }

    /// A build and the object the authorization chain is asked about for it.
    pub async fn build_object(&self, id: Id) -> Result<(Build, Value), Error> {
        let build = self.store().get_build(id).await?.ok_or_else(|| Error::not_found(&format!("build {id}")))?;
        let project = match build.project_id {
            Some(pid) => match self.store().get_project(pid).await? {
                Some(p) => self.authz_object("project", serde_json::to_value(&p).unwrap_or_default()).await?,
                None => json!({}),
            },
            None => json!({}),
        };
        let object = build_authz_object(&build, project);
        Ok((build, object))
    }

    /// A build, once the principal may `action` it.
    pub async fn build_for(&self, principal: &Principal, id: Id, action: &str) -> Result<Build, Error> {
        let (build, object) = self.build_object(id).await?;
        self.authorize(principal, action, "build", Some(object)).await?;
        Ok(build)
    }

    /// [`Service::build_object`] for a page of builds: one look at the groups
    /// and at each project, however many builds the page shows.
    pub async fn build_objects(&self, builds: &[Build]) -> Result<Vec<Value>, Error> {
        let groups = self.store().list_groups().await?;
        let mut projects: std::collections::HashMap<Id, Value> = std::collections::HashMap::new();
        let mut objects = Vec::with_capacity(builds.len());
        for b in builds {
            let project = match b.project_id {
                Some(pid) => match projects.get(&pid) {
                    Some(object) => object.clone(),
                    None => {
                        let object = match self.store().get_project(pid).await? {
                            Some(p) => {
                                authz_object_with(&groups, "project", &serde_json::to_value(&p).unwrap_or_default())
                            }
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
    /// authorization object (in the order given).
    pub async fn visible_builds(
        &self,
        principal: &Principal,
        builds: Vec<Build>,
    ) -> Result<Vec<(Build, Value)>, Error> {
        let objects = self.build_objects(&builds).await?;
        let visible = self.visible(principal, "build", objects.clone()).await?;
        Ok(builds.into_iter().zip(objects).filter(|(b, _)| visible.contains(&b.id)).collect())
    }

    /// A pipeline, after asking whether the principal may `action` it.
    pub async fn pipeline_for(&self, principal: &Principal, id: Id, action: &str) -> Result<Pipeline, Error> {
        let pipeline =
            self.store().get_pipeline(id).await?.ok_or_else(|| Error::not_found(&format!("pipeline {id}")))?;
        let object = self.authz_object("pipeline", serde_json::to_value(&pipeline).unwrap_or_default()).await?;
        self.authorize(principal, action, "pipeline", Some(object)).await?;
        Ok(pipeline)
    }
}
