//! The pages that are not plain object forms: the project list with its
//! controls, launch questions, builds (list, detail with live output), the
//! dashboard and the pipeline map.

use std::collections::HashMap;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;

use super::{api_error_page, error_page, names, redirect, Ctx, Form, UiRequest};
use crate::service::builds::StageRef;
use crate::service::model::{Build, BuildFilter, BuildStatus, Id, LaunchAnswers, ObjectKind};
use crate::web::error::ApiError;

const PAGE: i64 = 50;
/// Output lines rendered into a build page: the last ones, and this many
/// more each time "load earlier" is used.
pub(crate) const OUTPUT_TAIL: i64 = 1000;

/// Whether a project (as JSON) has launch questions.
pub(crate) fn has_questions(project: &Value) -> bool {
    questions(project).map(|q| !q.is_empty()).unwrap_or(false)
}

fn questions(project: &Value) -> Result<Vec<Value>, String> {
    match &project["launch_questions"] {
        Value::Array(a) => Ok(a.clone()),
        Value::Null => Ok(Vec::new()),
        _ => Err("launch_questions is not a JSON list".into()),
    }
}

fn fmt_time(v: &Value) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A duration as people read it: `0.4 s` and `12 s` under a minute,
/// `3 min 05 s` under an hour, `2 h 07 min` beyond.
pub(crate) fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// How long a build ran, or has been running.
fn duration_ms(b: &Build) -> Option<i64> {
    match (b.start_time, b.end_time) {
        (Some(s), Some(e)) => Some((e - s).num_milliseconds()),
        (Some(s), None) => Some((chrono::Utc::now() - s).num_milliseconds()),
        _ => None,
    }
}

fn runtime(b: &Build) -> String {
    match (duration_ms(b), b.end_time) {
        (Some(ms), Some(_)) => duration_text(ms),
        (Some(ms), None) => format!("{} so far", duration_text(ms)),
        _ => String::new(),
    }
}

/// The builds shown on a project's page.
const PROJECT_BUILDS: i64 = 20;
/// The duration chart's drawing area, in SVG units.
const CHART_WIDTH: i64 = 600;
const CHART_HEIGHT: i64 = 120;

/// A project's recent builds that the user may see (newest first), a
/// duration-and-outcome chart of the finished ones (oldest left: one bar per
/// build, its height the run time, its colour the outcome) and their
/// success rate, for the project's page.
pub(crate) async fn project_history(ctx: &Ctx, project_id: Id) -> Result<Value, ApiError> {
    let filter = BuildFilter { project_id: Some(project_id), limit: PROJECT_BUILDS, ..Default::default() };
    let builds = ctx.state.service.list_builds(&ctx.principal, &filter).await?;
    let projects = names(ctx, ObjectKind::Project).await;
    let pools = names(ctx, ObjectKind::WorkerPool).await;
    let mut rows = Vec::new();
    for (b, object) in &builds {
        rows.push(build_row(ctx, (b, object), &projects, &pools).await);
    }
    let done: Vec<(&Build, i64)> = builds
        .iter()
        .rev()
        .filter(|(b, _)| !b.status.is_active())
        .filter_map(|(b, _)| b.end_time.and(duration_ms(b)).map(|ms| (b, ms.max(0))))
        .collect();
    let longest = done.iter().map(|(_, ms)| *ms).max().unwrap_or(0).max(1);
    let slot = CHART_WIDTH / PROJECT_BUILDS;
    let bars: Vec<Value> = done
        .iter()
        .enumerate()
        .map(|(i, (b, ms))| {
            // At least 2 units tall, so a build of no time still shows its outcome.
            let height = ((*ms as f64 / longest as f64) * (CHART_HEIGHT - 2) as f64).round() as i64 + 2;
            json!({
                "id": b.id,
                "status": b.status.as_str(),
                "x": i as i64 * slot + 2,
                "y": CHART_HEIGHT - height,
                "width": slot - 4,
                "height": height,
                "duration": duration_text(*ms),
            })
        })
        .collect();
    let succeeded = done.iter().filter(|(b, _)| b.status == BuildStatus::Success).count();
    let success_rate = (!done.is_empty()).then(|| (succeeded * 100 + done.len() / 2) / done.len());
    Ok(json!({
        "builds": rows,
        "chart": {
            "bars": bars,
            "width": CHART_WIDTH,
            "height": CHART_HEIGHT,
            "longest": duration_text(longest),
        },
        "finished": done.len(),
        "succeeded": succeeded,
        "success_rate": success_rate,
    }))
}

/// A build as the templates show it.
async fn build_row(
    ctx: &Ctx,
    (b, object): (&Build, &Value),
    projects: &HashMap<i64, String>,
    pools: &HashMap<i64, String>,
) -> Value {
    let can_stop = b.status.is_active()
        && ctx.state.service.authorize(&ctx.principal, "stop", "build", Some(object.clone())).await.is_ok();
    let v = serde_json::to_value(b).unwrap_or_default();
    json!({
        "id": b.id,
        "status": b.status.as_str(),
        "active": b.status.is_active(),
        "project_id": b.project_id,
        "project": b.project_id.map(|p| projects.get(&p).cloned().unwrap_or_else(|| format!("#{p}"))),
        "organization_id": b.organization_id,
        "pool": pools.get(&b.worker_pool_id).cloned().unwrap_or_else(|| format!("#{}", b.worker_pool_id)),
        "revision": b.revision,
        "revision_username": b.revision_username,
        "revision_email": b.revision_email,
        "queued_time": fmt_time(&v["queued_time"]),
        "start_time": fmt_time(&v["start_time"]),
        "end_time": fmt_time(&v["end_time"]),
        "runtime": runtime(b),
        "return_code": b.return_code,
        "has_root": !b.working_dir.is_empty() && b.root_removed_at.is_none(),
        "can_stop": can_stop,
        "pinned": b.pinned,
        "trigger_failures": b.trigger_failures.as_deref().map(|t| t.lines().collect::<Vec<_>>()),
        "log_removed_at": fmt_time(&v["log_removed_at"]),
        "root_removed_at": fmt_time(&v["root_removed_at"]),
    })
}

/// Only the builds the user may see, each with what the authorization plugins see of it.
async fn builds_in(ctx: &Ctx, status: BuildStatus, limit: i64) -> Result<Vec<(Build, Value)>, ApiError> {
    let filter = BuildFilter { status: Some(status), limit, ..Default::default() };
    Ok(ctx.state.service.list_builds(&ctx.principal, &filter).await?)
}

pub(crate) async fn dashboard(ctx: &Ctx, fragment: bool) -> Response {
    let result: Result<Value, ApiError> = async {
        ctx.require("list", "build", None).await?;
        let projects = names(ctx, ObjectKind::Project).await;
        let pools = names(ctx, ObjectKind::WorkerPool).await;
        let mut running = builds_in(ctx, BuildStatus::Running, 100).await?;
        running.extend(builds_in(ctx, BuildStatus::Aborting, 100).await?);
        let queued = builds_in(ctx, BuildStatus::Queued, 100).await?;
        let failed = builds_in(ctx, BuildStatus::Failure, 10).await?;
        let recent =
            ctx.state.service.list_builds(&ctx.principal, &BuildFilter { limit: 10, ..Default::default() }).await?;
        // Queue depth per pool the user may see: how busy a pool is, not whose builds wait in it.
        let mut pool_list: Vec<(&i64, &String)> = pools.iter().collect();
        pool_list.sort_by(|a, b| a.1.cmp(b.1));
        let mut queues = Vec::new();
        for (id, name) in pool_list {
            queues.push(json!({
                "id": id,
                "name": name,
                "queued": ctx.state.service.count_builds(*id, BuildStatus::Queued).await?,
                "running": ctx.state.service.count_builds(*id, BuildStatus::Running).await?,
            }));
        }
        let mut sections = Vec::new();
        for (title, id, list) in [
            ("Running", "running", running),
            ("Queued", "queued", queued),
            ("Recently failed", "failed", failed),
            ("Latest builds", "latest", recent),
        ] {
            let mut rows = Vec::new();
            for (b, object) in &list {
                rows.push(build_row(ctx, (b, object), &projects, &pools).await);
            }
            sections.push(json!({ "title": title, "id": id, "builds": rows }));
        }
        Ok(json!({
            "queues": queues,
            "sections": sections,
            "updated": chrono::Utc::now().format("%H:%M:%S UTC").to_string(),
        }))
    }
    .await;
    match result {
        Ok(context) => ctx.page(if fragment { "dashboard_fragment.html" } else { "dashboard.html" }, context),
        Err(e) => api_error_page(ctx, e),
    }
}

pub(crate) async fn projects(ctx: &Ctx, _req: &UiRequest) -> Response {
    let result: Result<Value, ApiError> = async {
        let values = ctx.state.service.list_visible(&ctx.principal, ObjectKind::Project).await?;
        let pools = names(ctx, ObjectKind::WorkerPool).await;
        let pipelines = names(ctx, ObjectKind::Pipeline).await;
        let stages = names(ctx, ObjectKind::Stage).await;
        let mut rows = Vec::new();
        for p in &values {
            let status_of = |id: &Value| {
                let id = id.as_i64();
                async move {
                    match id {
                        Some(id) => ctx
                            .state
                            .service
                            .build_status(id)
                            .await
                            .ok()
                            .flatten()
                            .map(|s| json!({ "id": id, "status": s.as_str() })),
                        None => None,
                    }
                }
            };
            let active = status_of(&p["active_build_id"]).await;
            let last = status_of(&p["last_build_id"]).await;
            let last_ok = status_of(&p["last_successful_build_id"]).await;
            let can_stop = match p["active_build_id"].as_i64() {
                Some(bid) => match ctx.state.service.build_for(&ctx.principal, bid, "stop").await {
                    Ok(b) => b.status.is_active(),
                    Err(_) => false,
                },
                None => false,
            };
            let lookup = |map: &HashMap<i64, String>, v: &Value| v.as_i64().and_then(|i| map.get(&i).cloned());
            rows.push(json!({
                "id": p["id"],
                "name": p["name"],
                "description": p["description"],
                "pool": lookup(&pools, &p["worker_pool_id"]),
                "pipeline_id": p["pipeline_id"],
                "pipeline": lookup(&pipelines, &p["pipeline_id"]),
                "stage": lookup(&stages, &p["stage_id"]),
                "active": active,
                "last": last,
                "last_ok": last_ok,
                "questions": has_questions(p),
                "can_start": ctx.can("start", "project", Some(p)).await,
                "can_stop": can_stop,
                "can_edit": ctx.can("edit", "project", Some(p)).await,
                "can_delete": ctx.can("delete", "project", Some(p)).await,
            }));
        }
        Ok(json!({ "rows": rows, "can_create": ctx.can("create", "project", None).await }))
    }
    .await;
    match result {
        Ok(context) => ctx.page("projects.html", context),
        Err(e) => api_error_page(ctx, e),
    }
}

async fn project_value(ctx: &Ctx, id: Id) -> Result<Value, ApiError> {
    Ok(ctx.state.service.get_value(ObjectKind::Project, id).await?)
}

pub(crate) async fn start_prompt(ctx: &Ctx, id: Id, error: Option<(String, &Form)>) -> Response {
    let result: Result<Response, ApiError> = async {
        let project = project_value(ctx, id).await?;
        ctx.require("start", "project", Some(&project)).await?;
        let (message, form) = match &error {
            Some((m, f)) => (Some(m.clone()), Some(*f)),
            None => (None, None),
        };
        let list = match questions(&project) {
            Ok(q) => q,
            Err(e) => {
                return Ok(ctx.page_with_status(
                    "start_prompt.html",
                    StatusCode::BAD_REQUEST,
                    json!({ "project": project, "broken": e }),
                ))
            }
        };
        let qs: Vec<Value> = list
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let variable = q["variable"].as_str().unwrap_or_default();
                let kind = q["type"].as_str().unwrap_or("text");
                let submitted: Vec<&str> = form.map(|f| f.all(&format!("q_{variable}"))).unwrap_or_default();
                let choices: Vec<Value> = q["choices"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        let text = c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string());
                        json!({ "value": text, "checked": submitted.contains(&text.as_str()) })
                    })
                    .collect();
                json!({
                    "index": i,
                    "variable": variable,
                    "type": kind,
                    "prompt": q["prompt"].as_str().filter(|p| !p.is_empty()).unwrap_or(variable),
                    "choices": choices,
                    "value": submitted.first().copied().unwrap_or(""),
                })
            })
            .collect();
        let status = if message.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
        Ok(ctx.page_with_status(
            "start_prompt.html",
            status,
            json!({ "project": project, "questions": qs, "error": message }),
        ))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

/// Starts a project (answers from the launch-question form, if any) and shows the build.
pub(crate) async fn start(ctx: &Ctx, id: Id, form: &Form) -> Response {
    let result: Result<Response, ApiError> = async {
        let project = project_value(ctx, id).await?;
        ctx.require("start", "project", Some(&project)).await?;
        let mut answers = LaunchAnswers::new();
        if has_questions(&project) {
            for q in questions(&project).unwrap_or_default() {
                let Some(variable) = q["variable"].as_str() else { continue };
                let given: Vec<&str> =
                    form.all(&format!("q_{variable}")).into_iter().filter(|s| !s.is_empty()).collect();
                if given.is_empty() {
                    continue;
                }
                let value = if q["type"].as_str() == Some("multi") { json!(given) } else { json!(given[0]) };
                answers.insert(variable.to_string(), value);
            }
        }
        match ctx.state.service.start_project(&ctx.principal, id, answers).await {
            Ok(build) => Ok(redirect(&format!("/ui/builds/{}", build.id))),
            Err(e) => {
                let e = ApiError::from(e);
                if has_questions(&project) && e.status == StatusCode::BAD_REQUEST {
                    return Ok(start_prompt(ctx, id, Some((e.message, form))).await);
                }
                Err(e)
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

pub(crate) async fn builds(ctx: &Ctx, req: &UiRequest) -> Response {
    let result: Result<Value, ApiError> = async {
        ctx.require("list", "build", None).await?;
        let num = |name: &str| req.query(name).filter(|s| !s.is_empty()).and_then(|s| s.parse::<i64>().ok());
        let status = req.query("status").filter(|s| !s.is_empty()).and_then(BuildStatus::parse);
        let offset = num("offset").unwrap_or(0).max(0);
        let filter = BuildFilter {
            project_id: num("project_id"),
            worker_pool_id: num("worker_pool_id"),
            status,
            limit: PAGE,
            offset,
        };
        let (builds, full_page) = ctx.state.service.list_builds_page(&ctx.principal, &filter).await?;
        let projects = names(ctx, ObjectKind::Project).await;
        let pools = names(ctx, ObjectKind::WorkerPool).await;
        let mut rows = Vec::new();
        for (b, object) in &builds {
            rows.push(build_row(ctx, (b, object), &projects, &pools).await);
        }
        let options = |map: &HashMap<i64, String>, selected: Option<i64>| {
            let mut v: Vec<(&i64, &String)> = map.iter().collect();
            v.sort_by(|a, b| a.1.cmp(b.1));
            v.into_iter().map(|(id, n)| json!({ "value": id, "label": n, "selected": Some(*id) == selected })).collect::<Vec<_>>()
        };
        let query = |offset: i64| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("project_id", filter.project_id.map(|v| v.to_string())),
                ("worker_pool_id", filter.worker_pool_id.map(|v| v.to_string())),
                ("status", filter.status.map(|s| s.as_str().to_string())),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, &v);
                }
            }
            q.append_pair("offset", &offset.to_string());
            q.finish()
        };
        Ok(json!({
            "rows": rows,
            "projects": options(&projects, filter.project_id),
            "pools": options(&pools, filter.worker_pool_id),
            "statuses": BuildStatus::ALL.iter().map(|s| json!({ "value": s.as_str(), "selected": Some(*s) == filter.status })).collect::<Vec<_>>(),
            "prev": (offset > 0).then(|| query((offset - PAGE).max(0))),
            "next": full_page.then(|| query(offset + PAGE)),
        }))
    }
    .await;
    match result {
        Ok(context) => ctx.page("builds.html", context),
        Err(e) => api_error_page(ctx, e),
    }
}

fn pretty(json_text: &str) -> String {
    serde_json::from_str::<Value>(json_text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json_text.to_string())
}

/// A build's page. Its output panel shows the last [`OUTPUT_TAIL`] lines (and
/// follows the build live), or with `before` the page of lines just before
/// that line number (not live); "load earlier" links to the page before the
/// first line shown, and the page's script fetches it in place instead.
pub(crate) async fn build(ctx: &Ctx, id: Id, before: Option<i64>) -> Response {
    let result: Result<Response, ApiError> = async {
        let (b, object) = ctx.state.service.build_object(id).await?;
        ctx.state.service.authorize(&ctx.principal, "view", "build", Some(object.clone())).await?;
        let projects = names(ctx, ObjectKind::Project).await;
        let pools = names(ctx, ObjectKind::WorkerPool).await;
        let mut row = build_row(ctx, (&b, &object), &projects, &pools).await;
        // Who may stop a build may pin it, whatever its status.
        row["can_pin"] =
            json!(ctx.state.service.authorize(&ctx.principal, "stop", "build", Some(object.clone())).await.is_ok());
        let total = b.output_lines;
        let (after, limit) = match before {
            Some(before) => {
                let before = before.clamp(1, total + 1);
                let after = (before - 1 - OUTPUT_TAIL).max(0);
                (after, before - 1 - after)
            }
            None => ((total - OUTPUT_TAIL).max(0), OUTPUT_TAIL),
        };
        let lines = if limit > 0 { ctx.state.service.output(id, after, limit).await? } else { Vec::new() };
        let first_seq = lines.first().map(|l| l.seq).unwrap_or(after + 1);
        let last_seq = lines.last().map(|l| l.seq).unwrap_or(after);
        let can_delete = !b.status.is_active()
            && !b.pinned
            && ctx.state.service.authorize(&ctx.principal, "delete", "build", Some(object)).await.is_ok();
        let details = ctx.state.service.build_details(&b).await?;
        let (worker, created_by) = (details.worker, details.created_by);
        Ok(ctx.page(
            "build.html",
            json!({
                "build": row,
                "script": b.script,
                "variables": pretty(&b.variables),
                "launch_answers": pretty(&b.launch_answers),
                "output_variables": pretty(&b.output_variables),
                "working_dir": b.working_dir,
                "worker": worker,
                "created_by": created_by,
                "pipeline_origin_build_id": b.pipeline_origin_build_id,
                "pipeline_parent_build_id": b.pipeline_parent_build_id,
                "lines": lines.iter().map(|l| json!({ "seq": l.seq, "stream": l.stream.as_str(), "text": l.text })).collect::<Vec<_>>(),
                "first_seq": first_seq,
                "last_seq": last_seq,
                "total_lines": total,
                "earlier_page": before.is_some(),
                "tail": OUTPUT_TAIL,
                "can_delete": can_delete,
            }),
        ))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

pub(crate) async fn stop(ctx: &Ctx, id: Id, form: &Form) -> Response {
    let result: Result<Response, ApiError> = async {
        ctx.state.service.stop_build(&ctx.principal, ctx.client, id).await?;
        let back = match form.get("next") {
            Some(n) if n.starts_with("/ui/") => n.to_string(),
            _ => format!("/ui/builds/{id}"),
        };
        Ok(redirect(&back))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

/// Pins (`pin` true) or unpins a build: retention and cleanup keep a pinned build.
pub(crate) async fn pin(ctx: &Ctx, id: Id, pin: bool) -> Response {
    let result: Result<Response, ApiError> = async {
        ctx.state.service.pin_build(&ctx.principal, ctx.client, id, pin).await?;
        Ok(redirect(&format!("/ui/builds/{id}")))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

pub(crate) async fn delete_build(ctx: &Ctx, id: Id) -> Response {
    let result: Result<Response, ApiError> = async {
        ctx.state.service.delete_build(&ctx.principal, ctx.client, id).await?;
        Ok(redirect("/ui/builds"))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

/// How many runs the pipeline map shows.
const RUNS_SHOWN: i64 = 10;

/// Approves a pipeline run, or re-runs it from the form's `stage`, and goes
/// back to the map.
pub(crate) async fn pipeline_run_action(ctx: &Ctx, id: Id, run: Id, action: &str, form: &Form) -> Response {
    let result: Result<Response, ApiError> = async {
        if action == "approve" {
            ctx.state.service.approve_stage(&ctx.principal, ctx.client, id, run).await?;
        } else {
            let stage = form
                .get("stage")
                .and_then(|s| s.parse::<Id>().ok())
                .ok_or_else(|| ApiError::field("stage", "Choose the stage to re-run from."))?;
            ctx.state.service.rerun_stage(&ctx.principal, id, run, StageRef::Id(stage)).await?;
        }
        Ok(redirect(&format!("/ui/pipelines/{id}/map")))
    }
    .await;
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

pub(crate) async fn pipeline_map(ctx: &Ctx, id: Id, fragment: bool) -> Response {
    let result: Result<Value, ApiError> = async {
        let pipeline = ctx.state.service.get_value(ObjectKind::Pipeline, id).await?;
        ctx.require("view", "pipeline", Some(&pipeline)).await?;
        let stage_names = names(ctx, ObjectKind::Stage).await;
        let mut rows = Vec::new();
        let stage_ids: Vec<i64> =
            pipeline["stage_ids"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
        for &stage in &stage_ids {
            let mut cells = Vec::new();
            for p in ctx.state.service.projects_in_stage(id, stage).await? {
                let status = |b: Option<i64>| async move {
                    match b {
                        Some(b) => ctx.state.service.build_status(b).await.ok().flatten().map(|s| json!({ "id": b, "status": s.as_str() })),
                        None => None,
                    }
                };
                cells.push(json!({
                    "id": p.id,
                    "name": p.name,
                    "enabled": p.pipeline_enabled,
                    "active": status(p.active_build_id).await,
                    "last": status(p.last_build_id).await,
                }));
            }
            rows.push(json!({
                "stage": stage_names.get(&stage).cloned().unwrap_or_else(|| format!("#{stage}")),
                "projects": cells,
            }));
        }
        let runs = ctx.state.service.pipeline_runs(&ctx.principal, id, RUNS_SHOWN).await?;
        let can_approve = ctx.require("approve", "pipeline", Some(&pipeline)).await.is_ok();
        let users = names(ctx, ObjectKind::User).await;
        let runs: Vec<Value> = runs
            .into_iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["started"] = json!(fmt_time(&v["started"]));
                for cell in v["stages"].as_array_mut().into_iter().flatten() {
                    if let Some(approver) = cell["approval"]["approved_by"].as_i64() {
                        cell["approval"]["approver"] = json!(users.get(&approver));
                    }
                }
                v
            })
            .collect();
        Ok(json!({
            "pipeline": { "id": id, "name": pipeline["name"], "enabled": pipeline["enabled"], "last_completed_date": fmt_time(&pipeline["last_completed_date"]), "last_completed_by": pipeline["last_completed_by"] },
            "rows": rows,
            "runs": runs,
            "stages": stage_ids.iter().map(|s| json!({"id": s, "name": stage_names.get(s).cloned().unwrap_or_else(|| format!("#{s}"))})).collect::<Vec<_>>(),
            "can_approve": can_approve,
            "updated": chrono::Utc::now().format("%H:%M:%S UTC").to_string(),
        }))
    }
    .await;
    match result {
        Ok(context) => ctx.page(if fragment { "pipeline_map_fragment.html" } else { "pipeline_map.html" }, context),
        Err(e) => {
            if e.status == StatusCode::NOT_FOUND {
                return error_page(Some(ctx), StatusCode::NOT_FOUND, &e.message);
            }
            api_error_page(ctx, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_under_a_minute_are_in_seconds() {
        assert_eq!(duration_text(0), "0.0 s");
        assert_eq!(duration_text(420), "0.4 s");
        assert_eq!(duration_text(9_949), "9.9 s");
        assert_eq!(duration_text(12_700), "12 s");
        assert_eq!(duration_text(59_999), "59 s");
        assert_eq!(duration_text(60_000), "1 min 00 s");
        assert_eq!(duration_text(185_000), "3 min 05 s");
        assert_eq!(duration_text(7_620_000), "2 h 07 min");
        assert_eq!(duration_text(-5), "0.0 s");
    }
}
