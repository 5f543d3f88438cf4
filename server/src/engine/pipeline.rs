//! Pipelines: after a success, the run (all builds sharing an origin) moves to
//! the next stage once every peer of the stage is green; the next stage's
//! projects start in parallel with parent and origin set. A failure stops the
//! run where it is. One process decides each advance (an engine mark), so two
//! peers finishing together start the next stage once.

use super::{Engine, Result, StartRequest};
use crate::store::{Build, BuildStatus, OutputStream, Project};

impl Engine {
    pub(super) async fn advance_pipeline(&self, build: &Build, project: &Project) -> Result<()> {
        let store = self.store();
        let (Some(pipeline_id), Some(stage_id)) = (project.pipeline_id, project.stage_id) else { return Ok(()) };
        if !project.pipeline_enabled {
            return Ok(());
        }
        let Some(mut pipeline) = store.get_pipeline(pipeline_id).await? else { return Ok(()) };
        if !pipeline.enabled {
            return Ok(());
        }
        let Some(index) = pipeline.stage_ids.iter().position(|s| *s == stage_id) else { return Ok(()) };
        let origin = build.pipeline_origin_build_id.unwrap_or(build.id);
        let run = store.builds_of_run(origin).await?;
        let peers = store.projects_in_stage(pipeline_id, stage_id).await?;
        // The first stage gates on the projects this run started; later stages on all of theirs.
        let required: Vec<&Project> = if index == 0 {
            peers.iter().filter(|p| run.iter().any(|b| b.project_id == Some(p.id))).collect()
        } else {
            peers.iter().collect()
        };
        let waiting: Vec<&str> = required
            .iter()
            .filter(|p| !run.iter().any(|b| b.project_id == Some(p.id) && b.status == BuildStatus::Success))
            .map(|p| p.name.as_str())
            .collect();
        let say = |text: String| async move {
            let _ = self.store().append_output(build.id, &[(OutputStream::Message, text.as_str())]).await;
        };
        if !waiting.is_empty() {
            say(format!("pipeline {}: waiting for {}", pipeline.name, waiting.join(", "))).await;
            return Ok(());
        }
        let Some(next_stage) = pipeline.stage_ids.get(index + 1).copied() else {
            if store.try_mark("pipeline-complete", &origin.to_string()).await? {
                pipeline.last_completed_date = Some(crate::store::now());
                pipeline.last_completed_by = build.created_by;
                store.update_pipeline(&pipeline).await?;
                say(format!("pipeline {}: complete", pipeline.name)).await;
            }
            return Ok(());
        };
        if !store.try_mark("pipeline-advance", &format!("{origin}:{}", index + 1)).await? {
            return Ok(());
        }
        let next = store.projects_in_stage(pipeline_id, next_stage).await?;
        let stage_name = store.get_stage(next_stage).await?.map(|s| s.name).unwrap_or_default();
        let mut started = Vec::new();
        for p in next.iter().filter(|p| p.pipeline_enabled) {
            let queued = self
                .start_project(StartRequest {
                    project_id: p.id,
                    pipeline_parent: Some(build.clone()),
                    ..Default::default()
                })
                .await?;
            started.push(format!("{} (build {})", p.name, queued.id));
        }
        say(format!("pipeline {}: next stage {stage_name}: {}", pipeline.name, started.join(", "))).await;
        Ok(())
    }
}
