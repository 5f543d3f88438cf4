-- Authentication sources (docs/plugins/authentication.md): which source an
-- account's password is checked by ('local': Vespene's own hash; otherwise
-- the name of an [plugins.authentication] entry), and which source added a
-- group membership ('' for an administrator; a plugin's name for the groups
-- it syncs, so only those are taken away when it stops naming them).
ALTER TABLE users ADD COLUMN auth_source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE group_members ADD COLUMN source TEXT NOT NULL DEFAULT '';
