-- Pipelines and triggers people can trust (issue 19). A stage may wait for
-- approval before its projects start; each wait, and who ended it, is a row
-- of pipeline_approvals (one per run and stage: a run is the builds sharing
-- an origin build). A build records the triggers that failed for it without
-- its own result being rewritten.
ALTER TABLE stages ADD COLUMN approval_required INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN trigger_failures TEXT;
CREATE TABLE pipeline_approvals (
    origin_build_id INTEGER NOT NULL,
    stage_id INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    parent_build_id INTEGER NOT NULL,
    requested_at INTEGER NOT NULL,
    approved_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    approved_at INTEGER,
    PRIMARY KEY (origin_build_id, stage_id)
);
CREATE INDEX pipeline_approvals_pipeline ON pipeline_approvals(pipeline_id, origin_build_id);
