-- The audit log (docs/operations.md): who changed what, when. The actor's
-- user id is kept without a foreign key (and the username beside it) so a
-- deleted user's history stays. Details are JSON: changed field names, and
-- old/new values only for fields that can never hold a secret.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor_id BIGINT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object_kind TEXT NOT NULL DEFAULT '',
    object_id BIGINT,
    object_name TEXT NOT NULL DEFAULT '',
    remote_addr TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
-- Listing newest first, time filters and retention.
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_object ON audit_events (object_kind, object_id);
-- A project's status badge is served without a login only when it says so.
ALTER TABLE projects ADD COLUMN public_badge INTEGER NOT NULL DEFAULT 0;
