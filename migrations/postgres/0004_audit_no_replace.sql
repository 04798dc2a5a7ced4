-- Nothing to do on PostgreSQL: there is no REPLACE statement, and the
-- triggers of 0002 already refuse UPDATE, DELETE and TRUNCATE. This file
-- keeps the migration numbers of both engines aligned (SQLite's 0004 adds a
-- trigger against INSERT OR REPLACE).
SELECT 1;
