-- The secret variables a build uses, as placeholder -> value encrypted with the
-- store's key. Never served: the build record shows only the placeholders.
ALTER TABLE builds ADD COLUMN secret_values TEXT NOT NULL DEFAULT '{}';
