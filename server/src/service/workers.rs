//! The build machines as administrators see them, and deciding a pool's
//! size now.

use serde_json::{json, Value};

use super::objects::object_name;
use super::{audit, Error, Failure, Principal, Service};
use crate::store::{AuditObject, Id, ObjectKind};

impl Service {
    /// Every registered worker with whether its heartbeat is recent
    /// (`alive`). Host names and build-root paths of the build machines:
    /// for superusers.
    pub async fn list_workers(&self, principal: &Principal) -> Result<Vec<Value>, Error> {
        principal.require_superuser("only a superuser may list the workers")?;
        let timeout = self.settings().workers.heartbeat_timeout_seconds;
        let now = crate::store::now();
        Ok(self
            .store()
            .list_workers()
            .await?
            .into_iter()
            .map(|w| {
                let alive = w.last_checkin.is_some_and(|t| (now - t).num_seconds() <= timeout as i64);
                let mut v = serde_json::to_value(&w).unwrap_or_default();
                v["alive"] = json!(alive);
                v
            })
            .collect())
    }

    /// Decides pool `id`'s size now. Deciding is changing the pool: the
    /// pool's `edit` permission (superusers only, with the shipped
    /// authorization plugins). Answers the decision and the pool after it.
    pub async fn autoscale_now(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        id: Id,
    ) -> Result<(Value, Value), Error> {
        let current = self.get_value(ObjectKind::WorkerPool, id).await?;
        self.authorize_on(principal, "edit", "worker_pool", &current, &[]).await?;
        let Some(decision) = self.engine.autoscale_now(id).await? else {
            return Err(Error::new(
                Failure::Conflict,
                format!("worker pool {id}: another autoscaling decision is running; try again when it ends"),
            ));
        };
        let decision = serde_json::to_value(&decision).unwrap_or_default();
        let after = self.get_value(ObjectKind::WorkerPool, id).await?;
        let object = AuditObject::new("worker_pool", Some(id), object_name(ObjectKind::WorkerPool, &after));
        self.audit(&audit::actor(principal, client), "worker_pool.autoscale", &object, json!({ "decision": decision }))
            .await;
        Ok((decision, after))
    }
}
