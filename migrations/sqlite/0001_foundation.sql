-- Foundation schema: organizations, users, sessions, refresh-token families,
-- password resets, TOTP, security events and a minimal calls table.
-- Times are unix milliseconds (INTEGER); ids are UUID text.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    require_totp_privileged INTEGER NOT NULL DEFAULT 0,
    is_demo INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    password_hash TEXT NOT NULL,
    is_demo INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX users_org ON users (organization_id, created_at);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL CHECK (kind IN ('token', 'browser')),
    role TEXT NOT NULL,
    restricted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    family_expires_at INTEGER NOT NULL,
    retired_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX refresh_family ON refresh_tokens (family_id);

CREATE TABLE password_resets (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE totp_enrolments (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    secret_sealed TEXT NOT NULL,
    confirmed_at INTEGER,
    last_used_step INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE recovery_codes (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at INTEGER
);
CREATE INDEX recovery_user ON recovery_codes (user_id);

CREATE TABLE security_events (
    id TEXT PRIMARY KEY,
    organization_id TEXT,
    event_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    ip TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    request_id TEXT NOT NULL,
    user_id TEXT,
    details TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX security_events_time ON security_events (created_at, id);
CREATE INDEX security_events_type ON security_events (event_type, created_at);

CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    agent_id TEXT REFERENCES users(id),
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in_progress', 'completed',
        'busy', 'no_answer', 'failed', 'canceled')),
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    duration_secs INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX calls_org_time ON calls (organization_id, created_at DESC, id DESC);
CREATE INDEX calls_agent_time ON calls (organization_id, agent_id, created_at DESC, id DESC);
