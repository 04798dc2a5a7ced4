-- Failed sign-ins counted per e-mail address (SHA-256 of the lower-cased
-- address), for known and unknown addresses alike, so the delay after
-- repeated failures reveals nothing about which addresses have accounts.
-- Replaces users.failed_logins and users.locked_until, which are no longer
-- read or written.

CREATE TABLE login_failures (
    email_hash TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX login_failures_updated ON login_failures (updated_at);
