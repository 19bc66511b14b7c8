"""The relman CLI: `app`, built from its command groups, one module each.

- common.py: what the groups share (safe output, failures, running, options);
- release.py: start, approve/reject, delegate, amend-plan, status, list, operator controls, feedback;
- render.py: what those commands print (rich on a terminal, plain otherwise) and the one follow loop;
- cmdb.py: metrics and `relman cmdb ...` (CIs, changes, windows, verify-audit);
- keys.py, evidence.py, audit.py: signing keys, evidence export and offline verify, audit trails;
- server.py: worker, dev, demo.

`relman.starter` is the entry point that runs `app`.
"""

from __future__ import annotations

import typer

from relman.cli import audit, cmdb, evidence, keys, release, server

app = typer.Typer(
    name="relman",
    help="relman: durable ITIL release management on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("evidence")(evidence.evidence_cmd)
app.command("verify")(evidence.verify_cmd)
app.command("audit")(audit.audit_cmd)
# Added without a name, a group's commands are `relman`'s own, listed in this order.
app.add_typer(release.app)
app.add_typer(cmdb.app)
app.add_typer(server.app)
app.add_typer(cmdb.cmdb_app, name="cmdb")
app.add_typer(keys.keys_app, name="keys")

__all__ = ["app"]
