-- Worker pools say whether their builds may use the network (sandbox isolation cuts it off).
ALTER TABLE worker_pools ADD COLUMN network BOOLEAN NOT NULL DEFAULT TRUE;
