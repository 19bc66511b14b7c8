-- since: 1.0.0
-- The greeter's wording, by language: `{name}` marks where the name goes.
-- up
CREATE TABLE greetings (lang TEXT PRIMARY KEY, template TEXT NOT NULL CHECK (template LIKE '%{name}%'));
INSERT INTO greetings (lang, template) VALUES ('en', 'Hello, {name}!');
-- down
DROP TABLE greetings;
