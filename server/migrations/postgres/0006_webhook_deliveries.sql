-- Webhook deliveries already acted on, by sender and delivery id (GitHub's
-- X-GitHub-Delivery, GitLab's X-Gitlab-Event-UUID, the generic form's
-- signature): a replay is refused, whichever server process receives it.
CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);
