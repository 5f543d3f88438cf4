//! The form of every object kind: its fields grouped into the original's
//! tabs, how each is shown, and how a submitted form becomes the JSON the
//! store takes (the same input the REST API accepts).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{Ctx, Form};
use crate::service::model::ObjectKind as K;

/// How a field is shown and read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Widget {
    /// One line of text.
    Text,
    /// One line; blank is stored as null.
    OptText,
    /// Several lines.
    TextArea,
    /// Several lines, monospace (scripts, JSON).
    Code,
    /// A checkbox.
    Check,
    /// A whole number.
    Number,
    /// A whole number; blank is stored as null.
    OptNumber,
    /// A decimal number.
    Float,
    /// One object of a kind (required).
    Select(K),
    /// One object of a kind, or none.
    OptSelect(K),
    /// Several objects of a kind.
    Multi(K),
    /// Names of objects of a kind, in order, comma-separated.
    NameList(K),
    /// A secret: blank keeps the stored value.
    Secret,
    /// A secret over several lines (private keys).
    SecretArea,
    /// A user's password: required on creation, blank keeps it on edit.
    Password,
}

/// One field of a form.
pub(crate) struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub widget: Widget,
    pub group: &'static str,
    pub help: &'static str,
}

const fn f(group: &'static str, name: &'static str, label: &'static str, widget: Widget) -> Field {
    Field { name, label, widget, group, help: "" }
}

const fn h(group: &'static str, name: &'static str, label: &'static str, widget: Widget, help: &'static str) -> Field {
    Field { name, label, widget, group, help }
}

use Widget::*;

const VARIABLES_HELP: &str = "A JSON object. {\"NAME\": {\"secret\": \"value\"}} is a secret: stored encrypted, shown as \"********\", which keeps it when saved.";

const PROJECT: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    f("Info", "worker_pool_id", "Worker pool", Select(K::WorkerPool)),
    h("Info", "timeout", "Timeout (minutes)", Number, "The build fails when it runs longer."),
    h("Info", "container_base_image", "Container base image", OptText, "For container isolation."),
    h("Script", "script", "Script", Code, "A template: {{ variable }}; starts with an interpreter line."),
    h("Repository", "scm_type", "SCM type", Text, "none, git or svn (an scm plugin key)."),
    f("Repository", "repo_url", "Repository URL", Text),
    f("Repository", "repo_branch", "Branch", Text),
    f("Repository", "recursive", "Clone submodules", Check),
    f("Repository", "scm_login_id", "Service login", OptSelect(K::ServiceLogin)),
    f("SSH", "ssh_key_ids", "SSH keys", Multi(K::SshKey)),
    f("Schedule", "schedule_enabled", "Scheduling enabled", Check),
    f("Schedule", "monday", "Monday", Check),
    f("Schedule", "tuesday", "Tuesday", Check),
    f("Schedule", "wednesday", "Wednesday", Check),
    f("Schedule", "thursday", "Thursday", Check),
    f("Schedule", "friday", "Friday", Check),
    f("Schedule", "saturday", "Saturday", Check),
    f("Schedule", "sunday", "Sunday", Check),
    h("Schedule", "weekday_start_hours", "Weekday hours", Text, "e.g. 0,8,16 or 9-17"),
    h("Schedule", "weekday_start_minutes", "Weekday minutes", Text, "e.g. 0,30"),
    f("Schedule", "weekend_start_hours", "Weekend hours", Text),
    f("Schedule", "weekend_start_minutes", "Weekend minutes", Text),
    h("Schedule", "schedule_threshold", "Minimum minutes between builds", Number, ""),
    h("Schedule", "schedule_cron", "Cron expression", Text, "minute hour day-of-month month day-of-week"),
    f("Schedule", "schedule_timezone", "Time zone", Text),
    h("Variables", "variables", "Variables", Code, VARIABLES_HELP),
    f("Variables", "variable_set_ids", "Variable sets", Multi(K::VariableSet)),
    h("Variables", "launch_questions", "Launch questions", Code, "A JSON list of {variable, type, choices, prompt}."),
    f("Webhooks", "webhook_enabled", "Webhooks may start it", Check),
    h(
        "Webhooks",
        "public_badge",
        "Public status badge",
        Check,
        "Anyone, logged in or not, may fetch the status badge.",
    ),
    h("Webhooks", "webhook_token", "Webhook token", Secret, "Stored encrypted; leave blank to keep the stored one."),
    f("Pipeline", "pipeline_id", "Pipeline", OptSelect(K::Pipeline)),
    f("Pipeline", "stage_id", "Stage", OptSelect(K::Stage)),
    f("Pipeline", "pipeline_enabled", "Pipeline triggering enabled", Check),
    h("Triggers", "triggers", "Per-project triggers", Code, "A JSON list of trigger names."),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "launch_group_ids", "Launch groups", Multi(K::Group), "Members may start and stop it."),
    h("Retention", "log_keep_builds", "Keep logs of the last N builds", OptNumber, KEEP_HELP),
    h("Retention", "log_keep_days", "Keep logs for D days", OptNumber, KEEP_HELP),
    h("Retention", "root_keep_builds", "Keep build roots of the last N builds", OptNumber, KEEP_HELP),
    h("Retention", "root_keep_days", "Keep build roots for D days", OptNumber, KEEP_HELP),
];

const KEEP_HELP: &str = "Blank: the server's default. A build past either limit loses it (the build itself stays); \
pinned builds are always kept.";

/// Puts the administrator's default and maximum into the help of each keep
/// rule field of the project form, so the owner sees what blank means and
/// what is allowed.
pub(crate) fn explain_keep_rules(groups: &mut [Value], retention: &crate::settings::RetentionSettings) {
    let limit = |n: u32, unit: &str| match n {
        0 => "no limit".to_string(),
        1 => format!("1 {}", unit.trim_end_matches('s')),
        n => format!("{n} {unit}"),
    };
    for group in groups.iter_mut() {
        let Some(fields) = group["fields"].as_array_mut() else { continue };
        for field in fields {
            let name = field["name"].as_str().unwrap_or("").to_string();
            let Some((_, default, max)) = retention.keys().into_iter().find(|(k, _, _)| *k == name) else { continue };
            let unit = if name.ends_with("_days") { "days" } else { "builds" };
            let blank = crate::service::model::effective_retention(None, default, max) as u32;
            let mut help = format!("{KEEP_HELP} The server's default: {}.", limit(blank, unit));
            if max > 0 {
                help += &format!(" At most {max}.");
            }
            field["help"] = json!(help);
        }
    }
}

const PIPELINE: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    f("Info", "enabled", "Enabled", Check),
    h("Stages", "stage_ids", "Stages", NameList(K::Stage), "Stage names in order, separated by commas."),
    h("Variables", "variables", "Variables", Code, VARIABLES_HELP),
    f("Variables", "variable_set_ids", "Variable sets", Multi(K::VariableSet)),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const STAGE: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h(
        "Info",
        "approval_required",
        "Needs approval",
        Check,
        "A pipeline run waits before this stage until someone allowed to approve the pipeline (by default, those who own it) approves it.",
    ),
    h("Variables", "variables", "Variables", Code, VARIABLES_HELP),
    f("Variables", "variable_set_ids", "Variable sets", Multi(K::VariableSet)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const SNIPPET: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h("Text", "text", "Text", Code, "A template, injected as the variable named after the snippet."),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const VARIABLE_SET: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h("Variables", "variables", "Variables", Code, VARIABLES_HELP),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const SERVICE_LOGIN: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    f("Access", "username", "Username", Text),
    h("Access", "password", "Password", Secret, "Stored encrypted; leave blank to keep the stored one."),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const SSH_KEY: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h("Access", "private_key", "Private key", SecretArea, "Stored encrypted; leave blank to keep the stored one."),
    h("Access", "unlock_password", "Unlock password", Secret, "Leave blank to keep the stored one."),
    f("Ownership", "owner_group_ids", "Owner groups", Multi(K::Group)),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const ORGANIZATION: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h("Info", "organization_type", "Type", Text, "An organization plugin key, e.g. github."),
    f("Info", "organization_identifier", "Organization at the provider", Text),
    h("Info", "api_endpoint", "API endpoint", Text, "Blank for github.com."),
    f("Import Configuration", "import_enabled", "Import enabled", Check),
    f("Import Configuration", "import_without_dotfile", "Import repositories without .vespene", Check),
    f("Import Configuration", "force_rescan", "Import at the next chance", Check),
    f("Import Configuration", "refresh_minutes", "Minutes between imports", Number),
    f("Import Configuration", "worker_pool_id", "Pool that runs the import", Select(K::WorkerPool)),
    f("Import Configuration", "default_worker_pool_id", "Pool for imported projects", Select(K::WorkerPool)),
    f("Import Configuration", "scm_login_id", "Service login", OptSelect(K::ServiceLogin)),
    f("Import Configuration", "auto_attach_ssh_key_ids", "SSH keys to attach", Multi(K::SshKey)),
    f("Import Rules", "overwrite_project_name", "Rename projects", Check),
    f("Import Rules", "overwrite_project_script", "Replace scripts", Check),
    f("Import Rules", "overwrite_configurations", "Replace other settings", Check),
    f("Import Rules", "allow_pipeline_definition", "Create pipelines", Check),
    f("Import Rules", "allow_worker_pool_assignment", "Set worker pools", Check),
];

const WORKER_POOL: &[Field] = &[
    f("Info", "name", "Name", Text),
    f("Info", "description", "Description", TextArea),
    h("Variables", "variables", "Variables", Code, VARIABLES_HELP),
    f("Variables", "variable_set_ids", "Variable sets", Multi(K::VariableSet)),
    h(
        "Security",
        "isolation_method",
        "Isolation method",
        Text,
        "An isolation plugin key: sandbox, sudo, container, shell, ...",
    ),
    h("Security", "sudo_user", "Sudo user", OptText, "For sudo isolation."),
    h(
        "Security",
        "network",
        "Network",
        Check,
        "Builds may use the network (sandbox isolation cuts it off when unset).",
    ),
    h("Security", "permissions_hex", "Build-root permissions", Text, "e.g. 0x770"),
    f("Queue", "sleep_seconds", "Worker poll interval (seconds)", Number),
    f("Queue", "auto_abort_minutes", "Orphan queued builds after (minutes)", Number),
    f("Queue", "build_latest", "Collapse duplicate queued builds", Check),
    f("Queue", "build_object_shelf_life", "Keep builds (days)", Number),
    f("Queue", "build_root_shelf_life", "Keep build roots (days)", Number),
    h(
        "Autoscaling",
        "autoscaling_enabled",
        "Autoscaling enabled",
        Check,
        "Housekeeping asks the autoscaler to size this pool every re-evaluation interval.",
    ),
    h(
        "Autoscaling",
        "autoscaler",
        "Autoscaler",
        Text,
        "A name in the settings' [plugins.autoscalers] section (its parameters and commands live there).",
    ),
    f("Autoscaling", "minimum", "Minimum workers", Number),
    f("Autoscaling", "maximum", "Maximum workers", Number),
    h("Autoscaling", "running_weight", "Running weight", Float, "Workers wanted per running build (planner input)."),
    h("Autoscaling", "queued_weight", "Queued weight", Float, "Workers wanted per queued build (planner input)."),
    h("Autoscaling", "excess", "Excess", Number, "Workers added to the planned size."),
    h("Autoscaling", "multiplier", "Multiplier", Float, "Factor on the weighted demand."),
    f("Autoscaling", "reevaluate_seconds", "Re-evaluate every (seconds)", Number),
    h("Ownership", "shared", "Shared", Check, "Anyone logged in may use it in their own projects and pipelines."),
];

const USER: &[Field] = &[
    f("Info", "username", "Username", Text),
    f("Info", "email", "E-mail", Text),
    f("Info", "first_name", "First name", Text),
    f("Info", "last_name", "Last name", Text),
    h("Access", "password", "Password", Password, "Leave blank to keep the current password."),
    h(
        "Access",
        "current_password",
        "Current password",
        Password,
        "Your own current password, to change your own password (a superuser resetting someone else's needs none).",
    ),
    f("Access", "is_superuser", "Superuser", Check),
    f("Access", "is_active", "Active", Check),
    f("Access", "group_ids", "Groups", Multi(K::Group)),
];

const GROUP: &[Field] = &[f("Info", "name", "Name", Text)];

/// The fields of a kind.
pub(crate) fn fields(kind: K) -> &'static [Field] {
    match kind {
        K::Project => PROJECT,
        K::Pipeline => PIPELINE,
        K::Stage => STAGE,
        K::Snippet => SNIPPET,
        K::VariableSet => VARIABLE_SET,
        K::ServiceLogin => SERVICE_LOGIN,
        K::SshKey => SSH_KEY,
        K::Organization => ORGANIZATION,
        K::WorkerPool => WORKER_POOL,
        K::User => USER,
        K::Group => GROUP,
    }
}

/// The referenced kind of a widget, if any.
fn reference(w: Widget) -> Option<K> {
    match w {
        Select(k) | OptSelect(k) | Multi(k) | NameList(k) => Some(k),
        _ => None,
    }
}

/// The names of the objects of each kind a form refers to, by id.
pub(crate) type Lookups = HashMap<K, HashMap<i64, String>>;

/// Names of every kind the fields refer to.
pub(crate) async fn lookups(ctx: &Ctx, kind: K) -> Lookups {
    let mut out = HashMap::new();
    for field in fields(kind) {
        if let Some(k) = reference(field.widget) {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(k) {
                e.insert(super::names(ctx, k).await);
            }
        }
    }
    out
}

fn widget_name(w: Widget) -> &'static str {
    match w {
        Text | OptText => "text",
        TextArea => "textarea",
        Code => "code",
        Check => "check",
        Number | OptNumber => "number",
        Float => "float",
        Select(_) | OptSelect(_) => "select",
        Multi(_) => "multi",
        NameList(_) => "text",
        Secret | Password => "password",
        SecretArea => "secretarea",
    }
}

fn ids_of(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
        Value::Number(n) => n.as_i64().into_iter().collect(),
        _ => vec![],
    }
}

fn sorted_options(names: &HashMap<i64, String>, selected: &[i64]) -> Vec<Value> {
    let mut options: Vec<(&i64, &String)> = names.iter().collect();
    options.sort_by_cached_key(|a| a.1.to_lowercase());
    options
        .into_iter()
        .map(|(id, name)| json!({ "value": id, "label": name, "selected": selected.contains(id) }))
        .collect()
}

/// The text a value shows as in a read-only view.
pub(crate) fn display(field: &Field, value: &Value, lookups: &Lookups) -> String {
    match field.widget {
        Check => if value.as_bool().unwrap_or(false) { "yes" } else { "no" }.into(),
        Select(k) | OptSelect(k) | Multi(k) | NameList(k) => {
            let names = lookups.get(&k);
            ids_of(value)
                .iter()
                .map(|id| names.and_then(|n| n.get(id)).cloned().unwrap_or_else(|| format!("#{id}")))
                .collect::<Vec<_>>()
                .join(", ")
        }
        Secret | SecretArea | Password => {
            if value.is_null() {
                "(none)".into()
            } else {
                "(stored)".into()
            }
        }
        _ => shown(value),
    }
}

/// A value as text: a JSON document (variables, launch questions) indented.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(_) | Value::Array(_) => serde_json::to_string_pretty(value).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// The fields as the form template shows them, filled from the object
/// (`form` None) or from what was submitted; errors next to their field.
pub(crate) fn view(
    kind: K,
    object: &Value,
    form: Option<&Form>,
    errors: &HashMap<String, String>,
    lookups: &Lookups,
    creating: bool,
) -> Vec<Value> {
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for field in fields(kind) {
        let current = &object[field.name];
        let mut v = json!({
            "name": field.name,
            "label": field.label,
            "widget": widget_name(field.widget),
            "help": field.help,
            "error": errors.get(field.name),
        });
        match field.widget {
            Check => {
                v["checked"] = json!(match form {
                    Some(f) => f.has(field.name),
                    None => current.as_bool().unwrap_or(false),
                })
            }
            Select(k) | OptSelect(k) | Multi(k) => {
                let selected: Vec<i64> = match form {
                    Some(f) => f.all(field.name).iter().filter_map(|s| s.parse().ok()).collect(),
                    None => ids_of(current),
                };
                v["options"] = json!(lookups.get(&k).map(|n| sorted_options(n, &selected)).unwrap_or_default());
                v["optional"] = json!(matches!(field.widget, OptSelect(_)));
            }
            NameList(k) => {
                v["value"] = json!(match form {
                    Some(f) => f.get(field.name).unwrap_or("").to_string(),
                    None => display(field, current, lookups),
                });
                v["choices"] = json!(lookups
                    .get(&k)
                    .map(|n| {
                        let mut names: Vec<&String> = n.values().collect();
                        names.sort();
                        names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    })
                    .unwrap_or_default());
            }
            Secret | SecretArea | Password => {
                v["value"] = json!("");
                v["stored"] = json!(!creating && !current.is_null() && field.widget != Password);
            }
            _ => {
                v["value"] = json!(match form {
                    Some(f) => f.get(field.name).unwrap_or("").to_string(),
                    None => shown(current),
                });
            }
        }
        match groups.iter_mut().find(|(g, _)| *g == field.group) {
            Some((_, list)) => list.push(v),
            None => groups.push((field.group, vec![v])),
        }
    }
    groups
        .into_iter()
        .map(|(g, fields)| json!({ "name": g, "id": g.to_lowercase().replace(' ', "-"), "fields": fields }))
        .collect()
}

/// The submitted form as store input: only the fields that differ from
/// `current` (so an edit names exactly what it changes, as the
/// authorization plugins expect). Unreadable values are errors by field.
pub(crate) fn read(
    kind: K,
    form: &Form,
    current: &Value,
    lookups: &Lookups,
    creating: bool,
) -> Result<Map<String, Value>, HashMap<String, String>> {
    let mut out = Map::new();
    let mut errors = HashMap::new();
    for field in fields(kind) {
        let raw = form.get(field.name).unwrap_or("");
        let value = match field.widget {
            Text | TextArea => json!(raw),
            Code => {
                let text = raw.replace("\r\n", "\n");
                // A JSON document field goes as the document when it parses
                // (so an unchanged one is not sent), else as the text, which
                // the save refuses naming the field.
                match current.get(field.name) {
                    Some(Value::Object(_) | Value::Array(_)) => serde_json::from_str::<Value>(&text)
                        .ok()
                        .filter(|v| v.is_object() || v.is_array())
                        .unwrap_or(json!(text)),
                    _ => json!(text),
                }
            }
            OptText => {
                if raw.trim().is_empty() {
                    Value::Null
                } else {
                    json!(raw.trim())
                }
            }
            Check => json!(form.has(field.name)),
            OptNumber if raw.trim().is_empty() => Value::Null,
            OptNumber => match raw.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.insert(field.name.to_string(), "Enter a whole number, or leave it blank.".to_string());
                    continue;
                }
            },
            Number => match raw.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.insert(field.name.to_string(), "Enter a whole number.".to_string());
                    continue;
                }
            },
            Float => match raw.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => json!(n),
                _ => {
                    errors.insert(field.name.to_string(), "Enter a number.".to_string());
                    continue;
                }
            },
            Select(_) => match raw.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.insert(field.name.to_string(), "Choose one.".to_string());
                    continue;
                }
            },
            OptSelect(_) => raw.parse::<i64>().map(|n| json!(n)).unwrap_or(Value::Null),
            Multi(_) => json!(form.all(field.name).iter().filter_map(|s| s.parse::<i64>().ok()).collect::<Vec<_>>()),
            NameList(k) => {
                let names = lookups.get(&k).cloned().unwrap_or_default();
                let mut ids = Vec::new();
                let mut unknown = Vec::new();
                for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match names.iter().find(|(_, n)| n.as_str() == name) {
                        Some((id, _)) => ids.push(*id),
                        None => unknown.push(name.to_string()),
                    }
                }
                if !unknown.is_empty() {
                    errors.insert(field.name.to_string(), format!("No such {}: {}", k.label(), unknown.join(", ")));
                    continue;
                }
                json!(ids)
            }
            Secret | SecretArea | Password => {
                if raw.is_empty() {
                    if creating && field.widget == Password && field.name == "password" {
                        errors.insert(field.name.to_string(), "A password is required.".to_string());
                    }
                    continue;
                }
                json!(raw)
            }
        };
        if creating || current.get(field.name) != Some(&value) {
            out.insert(field.name.to_string(), value);
        }
    }
    if kind == K::User && creating {
        // Accounts are created active; the API takes no is_active on creation.
        out.remove("is_active");
        out.remove("current_password");
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
