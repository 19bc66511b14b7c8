"""Makes `migrate` importable for the tests (pytest puts this directory on sys.path)."""
