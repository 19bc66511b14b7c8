-- What greeter-worker reads of greeter-db (migrations 001 and 003); a change there must
-- change this too, or the worker's tests no longer say anything about production.
CREATE TABLE greetings (lang TEXT PRIMARY KEY, template TEXT NOT NULL);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    lang TEXT NOT NULL DEFAULT 'en',
    message TEXT,
    sent_at TEXT
);
