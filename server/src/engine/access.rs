//! What the engine asks the authorization chain for an object's owners when
//! no person is making the request: which snippets a build may render, and
//! which pools, pipelines and stages an imported `.vespene` file may name.
//! The owners stand in as one user: the creator, with their groups and the
//! object's owner groups.

use serde_json::Value;
use vespene_plugin_api::{AccessRequest, UserInfo};

use super::{Engine, EngineError, Result};
use crate::store::{Group, Id};

/// Group ids to names, read once per question.
pub(super) struct GroupNames(Vec<Group>);

impl GroupNames {
    /// The names of the groups `ids` (unknown ids are skipped).
    pub(super) fn of(&self, ids: &[Id]) -> Vec<String> {
        self.0.iter().filter(|g| ids.contains(&g.id)).map(|g| g.name.clone()).collect()
    }

    /// A stored object as authorization plugins see it: its fields, with its
    /// owner groups by name.
    pub(super) fn object(&self, object: impl serde::Serialize) -> Value {
        let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
        let ids: Vec<Id> = value["owner_group_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.insert("owner_groups".into(), self.of(&ids).into());
        }
        value
    }
}

impl Engine {
    /// Every group's name, for [`GroupNames`].
    pub(super) async fn group_names(&self) -> Result<GroupNames> {
        Ok(GroupNames(self.store().list_groups().await?))
    }

    /// The owners of an object as one user: its creator with their groups,
    /// plus `owner_group_ids`. Without a creator (imported, made by the
    /// tutorial), the owner groups alone.
    pub(super) async fn owners(
        &self,
        groups: &GroupNames,
        created_by: Option<Id>,
        owner_group_ids: &[Id],
    ) -> Result<UserInfo> {
        let mut names = groups.of(owner_group_ids);
        let creator = match created_by {
            Some(id) => self.store().get_user(id).await?,
            None => None,
        };
        Ok(match creator {
            Some(u) => {
                names.extend(groups.of(&u.group_ids));
                UserInfo { id: u.id, username: u.username, superuser: u.is_superuser, groups: names }
            }
            None => UserInfo { id: 0, username: String::new(), superuser: false, groups: names },
        })
    }

    /// The ids among `candidates` (objects of `kind`) that `owners` may use.
    pub(super) async fn usable(&self, owners: UserInfo, kind: &str, candidates: Vec<Value>) -> Result<Vec<Id>> {
        let request = AccessRequest { user: Some(owners), action: "use".into(), kind: kind.into(), object: None };
        let registry = self.registry().clone();
        tokio::task::spawn_blocking(move || registry.access_filter(&request, &candidates))
            .await
            .map_err(|e| EngineError::Failed(format!("{kind} authorization stopped: {e}")))?
            .map_err(EngineError::Failed)
    }
}
