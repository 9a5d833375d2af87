-- Leases for everything that runs in the background, so that one host at a time works
-- on each and another takes over once a dead host's lease runs out. A lease's token
-- grows each time the lease changes hands: a write that names the token it was given
-- (fencing) fails once another host has taken the lease since.
ALTER TABLE effects ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE migrations ADD COLUMN lease_owner TEXT;
ALTER TABLE migrations ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE migrations ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
-- Periodic work any host may do, one host at a time: sweeps, event retries.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
