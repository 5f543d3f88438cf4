-- Autoscaling that runs (issue 17). A pool names one entry of the
-- [plugins.autoscalers] settings section (the original's planner and
-- executor are one plugin kind now, and executor commands live only in the
-- settings files, never in a row the API can write). Decisions are claimed
-- per pool by a lease, so one process at a time decides for a pool; they are
-- due every reevaluate_seconds after the last one. Workers record the pools
-- they serve, so a pool counts its own workers.
ALTER TABLE worker_pools RENAME COLUMN planner TO autoscaler;
ALTER TABLE worker_pools ADD COLUMN reevaluate_seconds BIGINT NOT NULL DEFAULT 600;
UPDATE worker_pools SET reevaluate_seconds = reevaluate_minutes * 60;
ALTER TABLE worker_pools DROP COLUMN reevaluate_minutes;
ALTER TABLE worker_pools DROP COLUMN executor;
ALTER TABLE worker_pools DROP COLUMN executor_command;
ALTER TABLE worker_pools ADD COLUMN autoscaling_lease BIGINT;
ALTER TABLE worker_pools ADD COLUMN autoscaling_message TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN pools TEXT NOT NULL DEFAULT '';
