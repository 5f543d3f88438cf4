//! Demo data for `vespene tutorial`, after the original's `tutorial_setup`:
//! groups, a worker pool, four stages in a pipeline, one project per stage,
//! a snippet and two variable sets. Idempotent: objects are found by name
//! and only missing ones are created, so running it twice changes nothing.

use super::*;

/// What the tutorial created (names of new objects; empty on a re-run).
#[derive(Debug, Default)]
pub struct TutorialReport {
    /// Objects created, as "kind name".
    pub created: Vec<String>,
}

/// The tutorial pool's name.
pub const POOL: &str = "tutorial-pool";
/// The tutorial pipeline's name.
pub const PIPELINE: &str = "tutorial-fake-CI/CD";
const STAGES: [&str; 4] = ["build", "qa", "stage", "release"];

/// Creates the tutorial objects that do not exist yet.
pub async fn setup(store: &Store) -> Result<TutorialReport> {
    let mut rep = TutorialReport::default();

    let mut group_ids = vec![];
    for g in ["developers", "qa", "management", "ops"] {
        let id = match store.find_group(g).await? {
            Some(x) => x.id,
            None => {
                rep.created.push(format!("group {g}"));
                store.create_group(g).await?
            }
        };
        group_ids.push(id);
    }
    // Every superuser joins every tutorial group, as in the original.
    for u in store.list_users().await?.into_iter().filter(|u| u.is_superuser) {
        for g in &group_ids {
            store.add_group_member(*g, u.id).await?;
        }
    }

    let common = match store.find_variable_set("tutorial-common-variables").await? {
        Some(x) => x.id,
        None => {
            rep.created.push("variable set tutorial-common-variables".into());
            store
                .create_variable_set(&VariableSet {
                    name: "tutorial-common-variables".into(),
                    description: "Variables every tutorial stage shares".into(),
                    variables: r#"{"company": "Acme", "log_level": "info"}"#.into(),
                    ..Default::default()
                })
                .await?
        }
    };
    let deploy = match store.find_variable_set("tutorial-deploy-variables").await? {
        Some(x) => x.id,
        None => {
            rep.created.push("variable set tutorial-deploy-variables".into());
            store
                .create_variable_set(&VariableSet {
                    name: "tutorial-deploy-variables".into(),
                    description: "Where the tutorial pretends to deploy".into(),
                    variables: r#"{"deploy_target": "staging.example.invalid", "replicas": 2}"#.into(),
                    ..Default::default()
                })
                .await?
        }
    };

    if store.find_snippet("tutorial_snippet").await?.is_none() {
        rep.created.push("snippet tutorial_snippet".into());
        store
            .create_snippet(&Snippet {
                name: "tutorial_snippet".into(),
                description: "A reusable block, rendered with the build's variables".into(),
                text: "echo \"snippet says hello from {{ company | default('somewhere') }}\"".into(),
                // Every tutorial project renders it, whoever made it.
                shared: true,
                ..Default::default()
            })
            .await?;
    }

    let pool = match store.find_worker_pool(POOL).await? {
        Some(p) => p.id,
        None => {
            rep.created.push(format!("worker pool {POOL}"));
            store
                .create_worker_pool(&WorkerPool {
                    name: POOL.into(),
                    description: "Runs the tutorial projects".into(),
                    isolation_method: "sudo".into(),
                    sudo_user: Some("nobody".into()),
                    ..Default::default()
                })
                .await?
        }
    };

    let mut stage_ids = vec![];
    for s in STAGES {
        let id = match store.find_stage(s).await? {
            Some(x) => x.id,
            None => {
                rep.created.push(format!("stage {s}"));
                store
                    .create_stage(&Stage {
                        name: s.into(),
                        description: format!("The {s} stage"),
                        variables: "{}".into(),
                        variable_set_ids: vec![common],
                        ..Default::default()
                    })
                    .await?
            }
        };
        stage_ids.push(id);
    }

    let pipeline = match store.find_pipeline(PIPELINE).await? {
        Some(p) => p.id,
        None => {
            rep.created.push(format!("pipeline {PIPELINE}"));
            store
                .create_pipeline(&Pipeline {
                    name: PIPELINE.into(),
                    description: "A pretend CI/CD pipeline: build, qa, stage, release".into(),
                    stage_ids: stage_ids.clone(),
                    ..Default::default()
                })
                .await?
        }
    };

    for (stage, sid) in STAGES.iter().zip(&stage_ids) {
        let name = format!("tutorial-project1-{stage}");
        if store.find_project(&name).await?.is_some() {
            continue;
        }
        rep.created.push(format!("project {name}"));
        let mut sets = vec![];
        if *stage == "stage" || *stage == "release" {
            sets.push(deploy);
        }
        let script = format!(
            "#!/bin/bash\n\
             set -e\n\
             echo \"{stage} step for {{{{ company }}}} at log level {{{{ log_level }}}}\"\n\
             {{{{ tutorial_snippet }}}}\n\
             {}\
             echo \"vespene/set last_stage {stage}\"\n",
            if sets.is_empty() {
                ""
            } else {
                "echo \"deploying to {{ deploy_target }} with {{ replicas }} replicas\"\n"
            }
        );
        store
            .create_project(&Project {
                name,
                description: format!("Tutorial project for the {stage} stage"),
                pipeline_id: Some(pipeline),
                stage_id: Some(*sid),
                worker_pool_id: pool,
                script,
                variables: format!(r#"{{"stage_name": "{stage}"}}"#),
                variable_set_ids: sets,
                owner_group_ids: vec![group_ids[0]],
                launch_group_ids: vec![group_ids[1], group_ids[3]],
                ..Default::default()
            })
            .await?;
    }
    Ok(rep)
}
