-- Close a gap in the append-only triggers of 0002: with SQLite's REPLACE
-- conflict resolution (`INSERT OR REPLACE`, `REPLACE INTO`) an insert that
-- names an existing entry deletes that entry without firing
-- audit_log_no_delete (delete triggers fire for REPLACE only when
-- recursive_triggers is on), so one statement could rewrite an entry.
-- Refuse any insert naming an existing sequence number or id before
-- conflict resolution runs. PostgreSQL has no REPLACE; its
-- `ON CONFLICT DO UPDATE` fires the update trigger.

CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq OR id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: insert over an existing entry refused');
END;
