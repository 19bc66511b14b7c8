"""DORA metrics: the one definition of a deployment, expected values computed by hand.

A deployment is a change that reached production users: `production_at` (live at 100 %) or
`failed_at` (rolled back, aborted or cancelled after a dark-launch stage above 0 % was
exposed). The allow-list stage alone leaves neither, so it is not a deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from matplotlib.patches import Rectangle
from typer.testing import CliRunner

from relman.cli import app
from relman.cli.dora_plot import metrics_figure
from relman.cmdb import ChangeRecord, CmdbStore, ComponentRow
from relman.cmdb.dora import component_deployment, compute
from relman.contracts import ChangeType, CloseCode, Outcome, Risk
from relman.contracts.train import ComponentRecord, TrainCloseInput, TrainComponent, TrainRequest
from tests.cmdb.helpers import Clock, close_input, make_store, request_

D = datetime(2025, 3, 1, tzinfo=UTC)  # day 0 of the period; every change is requested at D
H = timedelta(hours=1)
PERIOD = (D, D + timedelta(days=3))


def row(
    n: int,
    *,
    requested: datetime = D,
    production: datetime | None = None,
    failed: datetime | None = None,
    recovered: datetime | None = None,
    committed: datetime | None = None,
    code: CloseCode = CloseCode.SUCCESSFUL,
    change_type: ChangeType = ChangeType.NORMAL,
    service: str = "checkout",
) -> ChangeRecord:
    return ChangeRecord(
        release_id=f"r-{n}", service=service, version=f"1.0.{n}", change_type=change_type,
        requested_at=requested, committed_at=committed, production_at=production,
        failed_at=failed, recovered_at=recovered, close_code=code, status="closed",
    )  # fmt: skip


# The mix, as the workflow leaves it in the CMDB.
MIX = [
    # 1: completed on day 0; lead from commit D-6h to 100 % at D+4h = 10h
    row(1, committed=D - 6 * H, production=D + 4 * H),
    # 2: completed on day 0; no commit time, lead from request D to D+2h = 2h
    row(2, production=D + 2 * H),
    # 3: cancelled (aborted) after 10 % of users saw it, day 1: a deployment and a failure;
    #    never reached 100 % so no lead time; recovered D+26h -> D+26.5h = 0.5h
    row(3, failed=D + 26 * H, recovered=D + 26.5 * H, code=CloseCode.ABORTED),
    # 4: rolled back at the allow-list stage (0 % plus two internal users): no failed_at,
    #    no production_at -> not a deployment, not a failure
    row(4, code=CloseCode.ROLLED_BACK),
    # 5: emergency completed on day 1; lead from commit D+28h to D+30h = 2h
    row(5, committed=D + 28 * H, production=D + 30 * H, change_type=ChangeType.EMERGENCY),
    # 6: live at 100 % on day 2 (commit D+47h -> D+50h: lead 3h), then rolled back: failed
    #    D+51h, recovered D+53h = 2h
    row(6, committed=D + 47 * H, production=D + 50 * H, failed=D + 51 * H, recovered=D + 53 * H,
        code=CloseCode.ROLLED_BACK),
    # 7: rejected by the CAB: never deployed
    row(7, code=CloseCode.REJECTED),
    # 8: another service, completed on day 0: lead D -> D+5h = 5h
    row(8, production=D + 5 * H, service="search"),
    # 9: outside the period (before it)
    row(9, requested=D - 100 * H, production=D - 50 * H),
]  # fmt: skip


def assert_checkout_mix(m: object) -> None:
    from relman.cmdb.dora import DoraMetrics

    assert isinstance(m, DoraMetrics)
    # deployments: 1, 2, 3 (cancelled at 10 %), 5, 6 = 5; not 4 (allow-list), 7, 8 (search), 9
    assert (m.deployments, m.failures) == (5, 2)  # failures: 3 and 6
    assert m.deployment_frequency_per_day == pytest.approx(5 / 3)  # 5 over 3 days
    assert m.change_fail_rate == pytest.approx(2 / 5)  # 0.4
    assert m.lead_time_hours == pytest.approx(2.5)  # 10, 2, 2, 3 (3 has none) -> (2 + 3) / 2
    assert m.recovery_hours == pytest.approx(1.25)  # 0.5 and 2 -> (0.5 + 2) / 2
    assert m.rework_rate == pytest.approx(1 / 5)  # emergency: 5
    # per day (by production_at, else failed_at): day 0: 1, 2; day 1: 3, 5; day 2: 6
    assert [d.deployments for d in m.series] == [2, 2, 1]
    assert [d.failures for d in m.series] == [0, 1, 1]
    assert [d.successful for d in m.series] == [2, 1, 0]
    assert [d.emergency for d in m.series] == [0, 1, 0]
    # day 0: 10, 2 -> 6; day 1: 5's 2 (3 has none); day 2: 3
    assert [d.lead_time_hours for d in m.series] == [pytest.approx(6), pytest.approx(2), pytest.approx(3)]
    assert [d.recovery_hours for d in m.series] == [None, pytest.approx(0.5), pytest.approx(2)]


def test_mixed_releases_by_hand() -> None:
    assert_checkout_mix(compute(MIX, *PERIOD, service="checkout"))


def test_every_service() -> None:
    m = compute(MIX, *PERIOD)
    # checkout's 5 plus search's 8 = 6 deployments, still 2 failures
    assert (m.deployments, m.failures) == (6, 2)
    assert m.change_fail_rate == pytest.approx(2 / 6)
    assert m.lead_time_hours == pytest.approx(3)  # 10, 2, 2, 3 and 5: sorted 2, 2, 3, 5, 10 -> 3
    assert m.rework_rate == pytest.approx(1 / 6)


def test_empty_period() -> None:
    m = compute(MIX, *PERIOD, service="billing")
    assert (m.deployments, m.failures, m.deployment_frequency_per_day) == (0, 0, 0)
    assert m.change_fail_rate is None and m.lead_time_hours is None and m.rework_rate is None
    with pytest.raises(ValueError):
        compute([], D, D)


def test_the_plot_draws_failures_as_failures() -> None:
    m = compute(MIX, *PERIOD, service="checkout")
    top = metrics_figure(m).axes[0]
    bars = [b for b in top.patches if isinstance(b, Rectangle)]
    assert len(bars) == 6  # 3 days, successful then failed
    assert all(b.get_height() >= 0 and b.get_y() >= 0 for b in bars)
    ok, failed = bars[:3], bars[3:]
    assert [b.get_height() for b in ok] == [2, 1, 0]  # successful per day
    assert [b.get_height() for b in failed] == [0, 1, 1]  # failed per day, stacked on them
    assert [b.get_y() for b in failed] == [2, 1, 0]
    assert top.get_ylim()[0] == 0 and min(top.get_yticks()) >= 0
    assert all(float(t).is_integer() for t in top.get_yticks())  # no -0.5, no 0.5


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock(D)) as s:
        yield s


def fill(store: CmdbStore) -> None:
    """The same mix as MIX, through the store's own close_change (requested at the clock, D)."""
    close = store.close_change

    def req(version: str, **kw: object) -> dict[str, object]:
        return {"request": request_(version=version, **kw)}  # type: ignore[arg-type]

    close(
        close_input(version="1.0.1", production_at=D + 4 * H).model_copy(
            update=req("1.0.1", committed_at=D - 6 * H)
        )
    )
    close(close_input(version="1.0.2", production_at=D + 2 * H))
    close(
        close_input(
            version="1.0.3",
            outcome=Outcome.ABORTED,
            close_code=CloseCode.ABORTED,
            failed_at=D + 26 * H,
            recovered_at=D + 26.5 * H,
        )
    )
    close(close_input(version="1.0.4", outcome=Outcome.ROLLED_BACK, close_code=CloseCode.ROLLED_BACK))
    close(
        close_input(version="1.0.5", production_at=D + 30 * H).model_copy(
            update=req("1.0.5", committed_at=D + 28 * H, change_type=ChangeType.EMERGENCY)
        )
    )
    close(
        close_input(
            version="1.0.6",
            outcome=Outcome.ROLLED_BACK,
            close_code=CloseCode.ROLLED_BACK,
            production_at=D + 50 * H,
            failed_at=D + 51 * H,
            recovered_at=D + 53 * H,
        ).model_copy(update=req("1.0.6", committed_at=D + 47 * H))
    )
    close(close_input(version="1.0.7", outcome=Outcome.REJECTED, close_code=CloseCode.REJECTED))
    close(close_input(service="search", version="1.0.8", production_at=D + 5 * H))
    close(close_input(version="1.0.9", production_at=D - 50 * H))  # fmt: skip


def test_store_mix(store: CmdbStore) -> None:
    fill(store)
    assert_checkout_mix(store.dora(*PERIOD, service="checkout"))
    assert store.dora(*PERIOD, service="search").deployments == 1


def test_metrics_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/cmdb.sqlite"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("services:\n  billing: {}\n")
    monkeypatch.setenv("RELMAN_CMDB_URL", url)
    monkeypatch.setenv("RELMAN_CATALOG", str(catalog))
    monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "data"))
    store = CmdbStore(url, clock=Clock(D))
    try:
        fill(store)
    finally:
        store.close()
    runner = CliRunner()
    since, until = (t.isoformat() for t in PERIOD)

    def metrics(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["metrics", "--since", since, "--until", until, *args])
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    code, out = metrics("--service", "nope")
    assert code == 1
    assert out.strip().splitlines() == [
        f"error: unknown service 'nope': no CI or change in the CMDB, and not in the catalog {catalog}"
    ]
    code, out = metrics("--service", "billing")  # in the catalog only: known, nothing deployed
    assert (
        code == 0 and "deployments              0 (0 failed)" in out and "change fail rate         -" in out
    )
    plot = tmp_path / "dora.png"
    code, out = metrics("--service", "checkout", "--json", "--plot", str(plot))
    assert code == 0 and plot.read_bytes().startswith(b"\x89PNG")
    assert '"deployments": 5' in out and '"change_fail_rate": 0.4' in out
    help_ = runner.invoke(app, ["metrics", "--help"])
    out = help_.output
    assert (
        help_.exit_code == 0
        and "allow-list stage alone" in out
        and "https://dora.dev/guides/dora-metrics-four-keys/" in out
    )


# --- a release train: one deployment of each service it changed -----------------------

TRAIN = TrainRequest(
    train="quarterly",
    components=[
        TrainComponent(service="checkout", version="1.1.0", commit="abc1234"),
        TrainComponent(service="search", version="2.0.0", commit="abc1234"),
        TrainComponent(service="billing", version="3.0.0", commit="abc1234"),
    ],
    requested_by="alice",
    title="quarterly train",
    committed_at=D - 2 * H,
)
# checkout went live at D+3h (lead from the train's commit: 5h); search failed in its canary at
# D+27h (users saw it), so the train backed out: checkout failed then too (recovered at D+28h, its
# own backout), search recovered when the train's backout ended (D+29h); billing never reached
# users (not a deployment). The train's own row is not a deployment.
TRAIN_PARTS = [
    ComponentRecord(
        service="checkout", version="1.1.0", outcome=Outcome.ROLLED_BACK,
        production_at=D + 3 * H, failed_at=D + 27 * H, recovered_at=D + 28 * H,
    ),
    ComponentRecord(service="search", version="2.0.0", failed_at=D + 27 * H, outcome=Outcome.ROLLED_BACK),
    ComponentRecord(service="billing", version="3.0.0"),
]  # fmt: skip


def train_close() -> TrainCloseInput:
    return TrainCloseInput(
        release_id="train-quarterly",
        step="close",
        request=TRAIN,
        risk=Risk.MEDIUM,
        outcome=Outcome.ROLLED_BACK,
        close_code=CloseCode.ROLLED_BACK,
        components=TRAIN_PARTS,
        failed_at=D + 27 * H,
        recovered_at=D + 29 * H,
    )


def train_rows() -> list[ChangeRecord]:
    train = ChangeRecord(
        release_id="train-quarterly", kind="train", service="quarterly", version="",
        change_type=ChangeType.NORMAL, requested_at=D, committed_at=D - 2 * H,
        failed_at=D + 27 * H, recovered_at=D + 29 * H, close_code=CloseCode.ROLLED_BACK,
    )  # fmt: skip
    times = {"production_at", "failed_at", "recovered_at"}
    parts = [
        ComponentRow(service=c.service, ci=c.service, version=c.version, **c.model_dump(include=times))
        for c in TRAIN_PARTS
    ]
    return [component_deployment(train, p) for p in parts]


def assert_with_the_train(every: object, checkout: object, search: object) -> None:
    from relman.cmdb.dora import DoraMetrics

    assert (
        isinstance(every, DoraMetrics)
        and isinstance(checkout, DoraMetrics)
        and isinstance(search, DoraMetrics)
    )
    # the mix's 6 and 2 failures, plus the train's checkout and search (both failed); not billing
    assert (every.deployments, every.failures) == (8, 4)
    assert every.recovery_hours == pytest.approx(1.5)  # 0.5, 2, checkout's 1, search's 2 -> 1.5
    # checkout: the mix's 5 plus the train's component; its lead 5h: 2, 2, 3, 5, 10 -> 3
    assert (checkout.deployments, checkout.failures) == (6, 3)
    assert checkout.lead_time_hours == pytest.approx(3)
    assert checkout.recovery_hours == pytest.approx(1)  # 0.5, 2 and its own 1
    # a deployment counts on the day it went live: the train's checkout on day 0
    assert [d.deployments for d in checkout.series] == [3, 2, 1]
    assert [d.failures for d in checkout.series] == [1, 1, 1]
    # search: the mix's release and the train's failed component, recovered with the train
    assert (search.deployments, search.failures) == (2, 1)
    assert search.change_fail_rate == pytest.approx(0.5) and search.recovery_hours == pytest.approx(2)


def test_a_train_counts_once_per_service_it_changed() -> None:
    rows = MIX + train_rows()
    assert [(r.service, r.kind) for r in train_rows()] == [
        ("checkout", "train"),
        ("search", "train"),
        ("billing", "train"),
    ]
    assert_with_the_train(
        compute(rows, *PERIOD),
        compute(rows, *PERIOD, service="checkout"),
        compute(rows, *PERIOD, service="search"),
    )
    assert compute(rows, *PERIOD, service="billing").deployments == 0
    assert compute(rows, *PERIOD, service="quarterly").deployments == 0  # the train is no service


def test_store_mix_with_a_train(store: CmdbStore) -> None:
    fill(store)
    assert store.close_train(train_close())
    assert not store.close_train(train_close())  # a retry counts nothing twice
    assert_with_the_train(
        store.dora(*PERIOD), store.dora(*PERIOD, service="checkout"), store.dora(*PERIOD, service="search")
    )
    assert store.dora(*PERIOD, service="billing").deployments == 0
    assert store.dora(*PERIOD, service="quarterly").deployments == 0
