-- Objects others may name in their own (issue 14, finding 3): an owner or a
-- superuser marks one shared and then anyone logged in may use it.
ALTER TABLE ssh_keys ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE service_logins ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE variable_sets ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE worker_pools ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pipelines ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE stages ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE snippets ADD COLUMN shared BOOLEAN NOT NULL DEFAULT FALSE;
-- The pool every install starts with stays usable by everyone.
UPDATE worker_pools SET shared = TRUE WHERE name = 'default';
