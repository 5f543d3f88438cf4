-- Pipelines and triggers people can trust (issue 19). A stage may wait for
-- approval before its projects start; each wait, and who ended it, is a row
-- of pipeline_approvals (one per run and stage: a run is the builds sharing
-- an origin build). A build records the triggers that failed for it without
-- its own result being rewritten.
ALTER TABLE stages ADD COLUMN approval_required BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE builds ADD COLUMN trigger_failures TEXT;
CREATE TABLE pipeline_approvals (
    origin_build_id BIGINT NOT NULL,
    stage_id BIGINT NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    parent_build_id BIGINT NOT NULL,
    requested_at BIGINT NOT NULL,
    approved_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    approved_at BIGINT,
    PRIMARY KEY (origin_build_id, stage_id)
);
CREATE INDEX pipeline_approvals_pipeline ON pipeline_approvals(pipeline_id, origin_build_id);
