-- WebSocket tickets: short-lived, single-use credentials exchanged for one
-- upgrade of GET /api/ws, so no access token ever travels in a URL. Only the
-- SHA-256 of a ticket is stored; using one deletes its row.

CREATE TABLE ws_tickets (
    ticket_hash TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX ws_tickets_expires ON ws_tickets (expires_at);
