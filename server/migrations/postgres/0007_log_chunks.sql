-- Build logs as chunks: one row holds up to 4,096 consecutive lines (about
-- 64 KiB before compression) of one build, lines first_seq..=last_seq, in the
-- format of server/src/store/logs.rs (`encoding` 0: plain, 1: zstd). The
-- existing one-row-per-line `build_output` is converted by the migration
-- runner right after this file and then dropped.
CREATE TABLE build_log_chunks (
    build_id BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    raw_bytes BIGINT NOT NULL,
    encoding BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (build_id, last_seq)
);
