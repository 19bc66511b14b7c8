"""Who acts: Ed25519 keys, signed statements, their verification, and the release evidence.

Pure code over bytes (no temporalio, no I/O but key files): the workflow verifies with it
(passed through the sandbox), the CLI and the console sign with it, `relman verify` checks
evidence with it offline.
"""
