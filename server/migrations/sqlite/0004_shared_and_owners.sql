-- Objects others may name in their own (issue 14, finding 3): an owner or a
-- superuser marks one shared and then anyone logged in may use it.
ALTER TABLE ssh_keys ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE service_logins ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE variable_sets ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE worker_pools ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipelines ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snippets ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
-- The pool every install starts with stays usable by everyone.
UPDATE worker_pools SET shared = 1 WHERE name = 'default';
