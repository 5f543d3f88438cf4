-- Retention (docs/retention.md). Per-project keep rules for build logs and
-- build roots: the last N builds and/or D days; NULL takes the
-- administrator's default from [retention]. Builds can be pinned (never
-- pruned), and record when retention removed their log or their root.
ALTER TABLE projects ADD COLUMN log_keep_builds BIGINT;
ALTER TABLE projects ADD COLUMN log_keep_days BIGINT;
ALTER TABLE projects ADD COLUMN root_keep_builds BIGINT;
ALTER TABLE projects ADD COLUMN root_keep_days BIGINT;
ALTER TABLE builds ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE builds ADD COLUMN log_removed_at BIGINT;
ALTER TABLE builds ADD COLUMN root_removed_at BIGINT;
-- Housekeeping looks for a project's finished builds whose log is still there.
CREATE INDEX builds_project_log ON builds(project_id, log_removed_at, id);
