"""Sending the outbox: each row once, its message written back, a failure left pending."""

import sqlite3

from worker import greet_url, load_behaviour, pending, run


def add(db, *rows):
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO outbox (name, lang) VALUES (?, ?)", rows)
    conn.close()


def messages(db):
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT name, message FROM outbox ORDER BY id").fetchall()
    conn.close()
    return found


def test_this_release_quotes_names():
    # The behaviour shipped with the release under test.
    assert greet_url("http://g", "Ana", "fr", load_behaviour()) == "http://g/greet?name=Ana&lang=fr"


def test_sends_each_pending_row_once(outbox, greeter):
    add(outbox, ("Ana", "fr"), ("Bo", "en"))
    result = run(outbox, greeter, behaviour=load_behaviour())
    assert result["requests"] == 2 and result["errors"] == 0
    assert messages(outbox) == [("Ana", "Hi Ana (fr)"), ("Bo", "Hi Bo (en)")]
    assert run(outbox, greeter)["requests"] == 0  # nothing pending any more


def test_a_failed_send_stays_pending(outbox, greeter):
    add(outbox, ("fail", "en"), ("Cy", "en"))
    result = run(outbox, greeter, behaviour=load_behaviour())
    assert result["errors"] == 1 and result["error_rate"] == 0.5
    with sqlite3.connect(outbox) as conn:
        assert pending(conn, 10) == [(1, "fail", "en")]
    conn.close()


def test_the_batch_bounds_one_run(outbox, greeter):
    add(outbox, *[(f"n{i}", "en") for i in range(5)])
    assert run(outbox, greeter, batch=3)["requests"] == 3
