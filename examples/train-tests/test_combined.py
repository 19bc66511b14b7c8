"""Train suite `combined`: greeter-db, greeter and greeter-worker as staging holds them, together.

Each component's own suites test it alone (the worker's against a stand-in greeter); these
check what only the three together do: the greeter words a greeting from greeter-db's table,
and staging's worker sends greeter-db's outbox through staging's greeter.
"""

import json
import sqlite3
import subprocess
import sys
import urllib.request


def greet(base, name, lang):
    with urllib.request.urlopen(f"{base}/greet?name={name}&lang={lang}", timeout=5) as response:
        return json.load(response)["message"]


def template(database, lang):
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT template FROM greetings WHERE lang = ?", (lang,)).fetchone()
    conn.close()
    assert row is not None, f"greeter-db in staging has no {lang!r} greeting"
    return row[0]


def test_a_french_greeting_comes_from_greeter_dbs_table(greeter, database):
    assert greet(greeter, "Ana", "fr") == template(database, "fr").replace("{name}", "Ana")
    assert greet(greeter, "Ana", "fr") != greet(greeter, "Ana", "en")


def test_the_workers_release_sends_the_outbox_through_the_greeter(staging, greeter, database):
    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO outbox (name, lang) VALUES (?, ?)", [("Bo", "fr"), ("Dee", "es")])
    conn.close()
    worker = (staging["greeter-worker"] / "current").resolve() / "worker.py"
    assert worker.is_file(), f"greeter-worker is not deployed in staging ({worker})"
    done = subprocess.run(
        [sys.executable, str(worker), "--greeter", greeter, "--db", str(database)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["errors"] == 0
    with sqlite3.connect(database) as conn:
        sent = conn.execute("SELECT name, lang, message FROM outbox WHERE sent_at IS NOT NULL").fetchall()
    conn.close()
    assert sorted(sent) == [
        ("Bo", "fr", template(database, "fr").replace("{name}", "Bo")),
        ("Dee", "es", template(database, "es").replace("{name}", "Dee")),
    ]
