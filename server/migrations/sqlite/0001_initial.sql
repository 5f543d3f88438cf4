-- Vespene schema, version 1 (SQLite).
-- Times are milliseconds since the Unix epoch (UTC); JSON documents are text;
-- booleans are INTEGER 0/1 (sqlx's Any driver cannot carry SQLite's BOOLEAN).
-- Keep in step with ../postgres/0001_initial.sql.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    is_superuser INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    last_login INTEGER
);

CREATE TABLE account_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE variable_sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    variables TEXT NOT NULL DEFAULT '{}',
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE variable_set_owner_groups (
    variable_set_id INTEGER NOT NULL REFERENCES variable_sets(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (variable_set_id, group_id)
);

CREATE TABLE snippets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE snippet_owner_groups (
    snippet_id INTEGER NOT NULL REFERENCES snippets(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (snippet_id, group_id)
);

CREATE TABLE ssh_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    private_key TEXT,
    unlock_password TEXT,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE ssh_key_owner_groups (
    ssh_key_id INTEGER NOT NULL REFERENCES ssh_keys(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ssh_key_id, group_id)
);

CREATE TABLE service_logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    username TEXT NOT NULL DEFAULT '',
    password TEXT,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE service_login_owner_groups (
    service_login_id INTEGER NOT NULL REFERENCES service_logins(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (service_login_id, group_id)
);

CREATE TABLE worker_pools (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    variables TEXT NOT NULL DEFAULT '{}',
    isolation_method TEXT NOT NULL DEFAULT '',
    sudo_user TEXT,
    permissions_hex TEXT NOT NULL DEFAULT '0x777',
    sleep_seconds INTEGER NOT NULL DEFAULT 10,
    auto_abort_minutes INTEGER NOT NULL DEFAULT 1440,
    build_latest INTEGER NOT NULL DEFAULT 1,
    build_object_shelf_life INTEGER NOT NULL DEFAULT 365,
    build_root_shelf_life INTEGER NOT NULL DEFAULT 31,
    autoscaling_enabled INTEGER NOT NULL DEFAULT 0,
    planner TEXT NOT NULL DEFAULT '',
    executor TEXT NOT NULL DEFAULT '',
    running_weight REAL NOT NULL DEFAULT 1.0,
    queued_weight REAL NOT NULL DEFAULT 1.0,
    excess INTEGER NOT NULL DEFAULT 0,
    multiplier REAL NOT NULL DEFAULT 1.0,
    minimum INTEGER NOT NULL DEFAULT 0,
    maximum INTEGER NOT NULL DEFAULT 10,
    executor_command TEXT NOT NULL DEFAULT '',
    last_autoscaled INTEGER,
    autoscaling_status INTEGER,
    reevaluate_minutes INTEGER NOT NULL DEFAULT 10,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE worker_pool_variable_sets (
    worker_pool_id INTEGER NOT NULL REFERENCES worker_pools(id) ON DELETE CASCADE,
    variable_set_id INTEGER NOT NULL REFERENCES variable_sets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (worker_pool_id, variable_set_id)
);

CREATE TABLE workers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    worker_uid TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL DEFAULT '',
    port INTEGER NOT NULL DEFAULT 8000,
    build_root TEXT NOT NULL DEFAULT '',
    first_checkin INTEGER NOT NULL,
    last_checkin INTEGER NOT NULL,
    fileserving_enabled INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    variables TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE TABLE stage_variable_sets (
    stage_id INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    variable_set_id INTEGER NOT NULL REFERENCES variable_sets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage_id, variable_set_id)
);

CREATE TABLE pipelines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    last_completed_date INTEGER,
    last_completed_by INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    variables TEXT NOT NULL DEFAULT '{}',
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
-- Ordered stages: no fixed number of slots. Deleting a stage removes it from
-- the pipelines that use it (the original deleted the whole pipeline).
CREATE TABLE pipeline_stages (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    stage_id INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline_id, stage_id)
);
CREATE TABLE pipeline_variable_sets (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    variable_set_id INTEGER NOT NULL REFERENCES variable_sets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline_id, variable_set_id)
);
CREATE TABLE pipeline_owner_groups (
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline_id, group_id)
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    pipeline_id INTEGER REFERENCES pipelines(id) ON DELETE SET NULL,
    pipeline_enabled INTEGER NOT NULL DEFAULT 1,
    stage_id INTEGER REFERENCES stages(id) ON DELETE SET NULL,
    last_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    active_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    last_successful_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    repo_url TEXT NOT NULL DEFAULT '',
    repo_branch TEXT NOT NULL DEFAULT '',
    recursive INTEGER NOT NULL DEFAULT 1,
    scm_type TEXT NOT NULL DEFAULT 'none',
    webhook_enabled INTEGER NOT NULL DEFAULT 0,
    webhook_token TEXT,
    script TEXT NOT NULL DEFAULT '',
    timeout INTEGER NOT NULL DEFAULT 60,
    container_base_image TEXT,
    variables TEXT NOT NULL DEFAULT '{}',
    launch_questions TEXT NOT NULL DEFAULT '[]',
    scm_login_id INTEGER REFERENCES service_logins(id) ON DELETE SET NULL,
    worker_pool_id INTEGER NOT NULL REFERENCES worker_pools(id) ON DELETE RESTRICT,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    schedule_enabled INTEGER NOT NULL DEFAULT 0,
    monday INTEGER NOT NULL DEFAULT 0,
    tuesday INTEGER NOT NULL DEFAULT 0,
    wednesday INTEGER NOT NULL DEFAULT 0,
    thursday INTEGER NOT NULL DEFAULT 0,
    friday INTEGER NOT NULL DEFAULT 0,
    saturday INTEGER NOT NULL DEFAULT 0,
    sunday INTEGER NOT NULL DEFAULT 0,
    weekday_start_hours TEXT NOT NULL DEFAULT '',
    weekday_start_minutes TEXT NOT NULL DEFAULT '',
    weekend_start_hours TEXT NOT NULL DEFAULT '',
    weekend_start_minutes TEXT NOT NULL DEFAULT '',
    schedule_threshold INTEGER NOT NULL DEFAULT 10,
    schedule_cron TEXT NOT NULL DEFAULT '',
    schedule_timezone TEXT NOT NULL DEFAULT 'UTC',
    triggers TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX projects_repo_url ON projects(repo_url);
CREATE INDEX projects_pipeline ON projects(pipeline_id, stage_id);
CREATE INDEX projects_worker_pool ON projects(worker_pool_id);
CREATE TABLE project_variable_sets (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    variable_set_id INTEGER NOT NULL REFERENCES variable_sets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, variable_set_id)
);
CREATE TABLE project_ssh_keys (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    ssh_key_id INTEGER NOT NULL REFERENCES ssh_keys(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, ssh_key_id)
);
CREATE TABLE project_owner_groups (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, group_id)
);
CREATE TABLE project_launch_groups (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES account_groups(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, group_id)
);

CREATE TABLE organizations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    organization_type TEXT NOT NULL DEFAULT 'github',
    organization_identifier TEXT NOT NULL DEFAULT '',
    api_endpoint TEXT NOT NULL DEFAULT '',
    import_enabled INTEGER NOT NULL DEFAULT 1,
    import_without_dotfile INTEGER NOT NULL DEFAULT 0,
    overwrite_project_name INTEGER NOT NULL DEFAULT 1,
    overwrite_project_script INTEGER NOT NULL DEFAULT 1,
    overwrite_configurations INTEGER NOT NULL DEFAULT 1,
    allow_pipeline_definition INTEGER NOT NULL DEFAULT 1,
    allow_worker_pool_assignment INTEGER NOT NULL DEFAULT 1,
    default_worker_pool_id INTEGER NOT NULL REFERENCES worker_pools(id) ON DELETE RESTRICT,
    worker_pool_id INTEGER NOT NULL REFERENCES worker_pools(id) ON DELETE RESTRICT,
    force_rescan INTEGER NOT NULL DEFAULT 0,
    refresh_minutes INTEGER NOT NULL DEFAULT 120,
    scm_login_id INTEGER REFERENCES service_logins(id) ON DELETE SET NULL,
    last_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    active_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    last_successful_build_id INTEGER REFERENCES builds(id) ON DELETE SET NULL,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE organization_ssh_keys (
    organization_id INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    ssh_key_id INTEGER NOT NULL REFERENCES ssh_keys(id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, ssh_key_id)
);

CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER REFERENCES projects(id) ON DELETE CASCADE,
    organization_id INTEGER REFERENCES organizations(id) ON DELETE CASCADE,
    worker_pool_id INTEGER NOT NULL REFERENCES worker_pools(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'QUEUED',
    revision TEXT,
    revision_username TEXT,
    queued_time INTEGER,
    start_time INTEGER,
    end_time INTEGER,
    return_code INTEGER,
    working_dir TEXT NOT NULL DEFAULT '',
    script TEXT NOT NULL DEFAULT '',
    variables TEXT NOT NULL DEFAULT '{}',
    launch_answers TEXT NOT NULL DEFAULT '{}',
    output_variables TEXT NOT NULL DEFAULT '{}',
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    pipeline_origin_build_id INTEGER,
    pipeline_parent_build_id INTEGER,
    worker_id INTEGER REFERENCES workers(id) ON DELETE SET NULL,
    -- The last output sequence number handed out; bumped first in every
    -- append so the append takes the row's write lock before inserting.
    output_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX builds_queue ON builds(worker_pool_id, status, id);
CREATE INDEX builds_project ON builds(project_id, id);
CREATE INDEX builds_status ON builds(status);
CREATE INDEX builds_queued_time ON builds(queued_time);

-- Append-only build output: one row per line.
CREATE TABLE build_output (
    build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    ts INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

-- One-shot decisions shared by every worker process: a pipeline stage
-- advancing for a run, a schedule slot firing. Whoever inserts the row acts.
CREATE TABLE engine_marks (
    kind TEXT NOT NULL,
    mark TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, mark)
);
