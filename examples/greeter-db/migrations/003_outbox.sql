-- since: 2.0.0
-- Greetings to send: greeter-worker asks the greeter for each and writes the message back.
-- up
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    lang TEXT NOT NULL DEFAULT 'en',
    message TEXT,
    sent_at TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
-- down
DROP TABLE outbox;
