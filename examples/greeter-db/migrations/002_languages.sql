-- since: 2.0.0
-- French and Spanish greetings (greeter 2.0 serves `lang`).
-- up
INSERT INTO greetings (lang, template) VALUES ('fr', 'Bonjour, {name} !'), ('es', '¡Hola, {name}!');
-- down
DELETE FROM greetings WHERE lang IN ('fr', 'es');
