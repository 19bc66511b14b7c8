"""The service catalog: the example loads; bad catalogs fail naming file, service and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from relman.catalog import (
    CatalogError,
    UnknownService,
    load_catalog,
    people_names,
    read_trust,
    render_argv,
    train_suite_names,
)
from relman.contracts import ChangeModel, ConflictMode, Environment, Risk, Role
from relman.identity.keys import WORKER, Signer, ensure_keys

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "catalog.yaml"
KEYS = {name: Signer.generate(name) for name in ("alice", "bob", "carol", "pat")}
"""Real keys, made once: every test catalog declares its people with them."""


def person(*names: str) -> dict[str, Any]:
    return {name: {"keys": [KEYS[name].public]} for name in names}


def base_service(workdir: str = "src") -> dict[str, Any]:
    return {
        "workdir": workdir,
        "build": {"command": ["{python}", "build.py", "{version}"], "artifacts": ["out.txt"]},
        "tests": [{"name": "unit", "command": ["{python}", "-m", "pytest", "--junitxml={junit}"]}],
        "environments": {"staging": {"base_dir": "envs/staging"}, "production": {"base_dir": "envs/prod"}},
        "health": {"http": "http://127.0.0.1:9999/metrics"},
        "stages": [
            {"name": "one", "percent": 1, "bake_seconds": 0},
            {"name": "all", "percent": 50, "bake_seconds": 0},
        ],
        "cab": {"members": ["alice", "bob"], "quorum": 2},
    }


def write(tmp_path: Path, service: dict[str, Any], **top: Any) -> Path:
    """A catalog of one service; its CAB (alice, bob) declared with keys unless `people` is given."""
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "catalog.yaml"
    top.setdefault("people", person("alice", "bob"))
    path.write_text(yaml.safe_dump({"services": {"greeter": service}, **top}))
    return path


def error_of(tmp_path: Path, service: dict[str, Any], **top: Any) -> str:
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, service, **top), data_dir=tmp_path / "data")
    return str(exc.value)


def test_example_catalog_loads_from_any_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    signers = ensure_keys(tmp_path / "data" / "keys", [*people_names(EXAMPLE), WORKER])
    catalog = load_catalog(EXAMPLE, data_dir=tmp_path / "data")
    spec = catalog.service("greeter")
    assert spec.workdir == EXAMPLE.parent / "greeter"
    assert spec.env_dir(Environment.STAGING) == tmp_path / "data" / "envs" / "greeter" / "staging"
    profile = catalog.profile("greeter")
    trust = profile.trust
    assert trust.signatures == "required"
    assert trust.members(Role.CAB) == ["alice", "bob", "carol", "dave"] and trust.quorum == 2
    assert trust.members(Role.ECAB) == ["erin"]
    assert trust.members(Role.OPERATORS) == ["oli"]
    assert trust.members(Role.CHANGE_MANAGERS) == ["carol"]
    assert trust.members(Role.RELEASE_MANAGERS) == ["rita"]
    assert trust.keys_of("carol") == [signers["carol"].public]
    model = trust.change_model("docs-only")
    assert model is not None and model.requesters == ["pat"] and model.max_risk is Risk.LOW
    assert [s.percent for s in profile.stages] == [0, 1, 5, 25]
    assert profile.acceptance.max_error_rate == spec.health.max_error_rate
    # The requester of every example release is a declared person with a key.
    for manifest in (EXAMPLE.parent / "releases").glob("*.yaml"):
        assert trust.keys_of(yaml.safe_load(manifest.read_text())["requested_by"])
    assert read_trust(EXAMPLE, data_dir=tmp_path / "data").evidence_keys == [signers[WORKER].public]


def test_example_catalog_without_keys_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as exc:
        load_catalog(EXAMPLE, data_dir=tmp_path / "data")
    assert f"people.alice: public key file {tmp_path / 'data' / 'keys' / 'alice.pub'} cannot be read" in str(
        exc.value
    )


def test_relative_paths_resolve_against_the_catalog(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, base_service()), data_dir=tmp_path / "data")
    assert catalog.service("greeter").workdir == tmp_path / "src"
    assert catalog.service("greeter").env_dir(Environment.PRODUCTION) == tmp_path / "envs" / "prod"


def test_unknown_service_lists_known_ones(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, base_service()))
    with pytest.raises(UnknownService) as exc:
        catalog.profile("checkout")
    assert "checkout" in str(exc.value) and "greeter" in str(exc.value)
    assert isinstance(exc.value, KeyError)


def test_string_command_is_refused(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = "python build.py {version}"
    msg = error_of(tmp_path, svc)
    assert "catalog.yaml: services.greeter.build.command:" in msg
    assert "argv list" in msg


def test_empty_argv_is_refused(tmp_path: Path) -> None:
    svc = base_service()
    svc["tests"][0]["command"] = []
    assert "services.greeter.tests.0.command" in error_of(tmp_path, svc)


def test_missing_workdir(tmp_path: Path) -> None:
    msg = error_of(tmp_path, base_service(workdir="nowhere"))
    assert "services.greeter.workdir" in msg and "does not exist" in msg


def test_unknown_executable(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = ["no-such-tool-xyz", "build"]
    msg = error_of(tmp_path, svc)
    assert "build.command" in msg and "no-such-tool-xyz" in msg and "not found" in msg


def test_quorum_larger_than_roster(tmp_path: Path) -> None:
    svc = base_service()
    svc["cab"] = {"members": ["alice"], "quorum": 2}
    msg = error_of(tmp_path, svc)
    assert "services.greeter.cab" in msg and "quorum 2 exceeds the roster size 1" in msg


def test_stage_percents_must_increase(tmp_path: Path) -> None:
    svc = base_service()
    svc["stages"] = [
        {"name": "a", "percent": 5, "bake_seconds": 0},
        {"name": "b", "percent": 5, "bake_seconds": 0},
    ]
    assert "services.greeter.stages" in error_of(tmp_path, svc)


@pytest.mark.parametrize(
    ("stages", "said"),
    [
        # The release that hung forever: the catalog took a 100% stage the workflow refused.
        ([("one", 1), ("full", 100)], "full is at 100%"),
        ([("go-live", 1)], "may not be named go-live"),
        ([("a", 1), ("a", 2)], "names repeat"),
    ],
)
def test_catalog_refuses_a_rollout_the_workflow_would_refuse(
    tmp_path: Path, stages: list[tuple[str, float]], said: str
) -> None:
    svc = base_service()
    svc["stages"] = [{"name": n, "percent": p, "bake_seconds": 0} for n, p in stages]
    msg = error_of(tmp_path, svc)
    assert "services.greeter.stages" in msg and said in msg
    assert "\n" not in msg.strip()


def test_unknown_placeholder(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = ["{python}", "build.py", "{secret_token}"]
    assert "unknown placeholder" in error_of(tmp_path, svc)


def test_health_url_must_be_local(tmp_path: Path) -> None:
    svc = base_service()
    svc["health"] = {"http": "http://example.com/metrics"}
    assert "services.greeter.health.http" in error_of(tmp_path, svc)


def test_relationship_target_must_be_known(tmp_path: Path) -> None:
    svc = base_service()
    svc["relationships"] = [{"type": "depends_on", "target": "ghost-db"}]
    assert "ghost-db" in error_of(tmp_path, svc)
    ok = copy.deepcopy(svc)
    catalog = load_catalog(write(tmp_path, ok, configuration_items=[{"name": "ghost-db"}]))
    assert catalog.service("greeter").relationships[0].target == "ghost-db"


def test_placeholders_substitute_whole_values_without_splitting() -> None:
    argv = render_argv(
        ["tool", "--out={package_dir}", "{version}"], {"package_dir": "/a b;rm -rf", "version": "1.0.0"}
    )
    assert argv[1:] == ["--out=/a b;rm -rf", "1.0.0"]


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    with pytest.raises(CatalogError, match="mapping"):
        load_catalog(tmp_path / "bad.yaml")


def test_secrets_are_names_never_the_workers_own_settings(tmp_path: Path) -> None:
    svc = base_service()
    svc["secrets"] = ["registry-token"]
    assert "services.greeter.secrets" in error_of(tmp_path, svc)
    svc["secrets"] = ["REGISTRY_TOKEN", "RELMAN_CMDB_URL"]
    error = error_of(tmp_path, svc)
    assert "RELMAN_CMDB_URL: the worker's own settings are never passed to commands" in error


def test_secret_problems_name_the_service_and_the_variable(tmp_path: Path) -> None:
    svc = base_service()
    svc["secrets"] = ["REGISTRY_TOKEN", "SIGNING_KEY"]
    catalog = load_catalog(write(tmp_path, svc), data_dir=tmp_path / "data")
    assert catalog.secret_problems({"REGISTRY_TOKEN": "tok-123456", "SIGNING_KEY": "k"}) == [
        "services.greeter.secrets: SIGNING_KEY is shorter than 4 characters"
    ]
    assert catalog.secret_problems({}) == [
        "services.greeter.secrets: REGISTRY_TOKEN is not set in the worker's environment",
        "services.greeter.secrets: SIGNING_KEY is not set in the worker's environment",
    ]


# --- people, keys, roles and change models -----------------------------------------


def test_key_files_are_read_at_load_and_a_person_may_have_several_keys(tmp_path: Path) -> None:
    keys_dir = tmp_path / "data" / "keys"
    signers = ensure_keys(keys_dir, ["alice", "bob"])
    rotated = Signer.generate("alice")
    people = {
        "alice": {"keys": [rotated.public], "key_files": ["{data_dir}/keys/alice.pub"]},
        "bob": {"key_files": [str(keys_dir / "bob.pub")]},
    }
    catalog = load_catalog(write(tmp_path, base_service(), people=people), data_dir=tmp_path / "data")
    trust = catalog.profile("greeter").trust
    assert trust.keys_of("alice") == [rotated.public, signers["alice"].public]
    assert trust.keys_of("bob") == [signers["bob"].public]


def test_a_missing_key_file_names_the_person_and_the_path(tmp_path: Path) -> None:
    people = {**person("bob"), "alice": {"key_files": ["keys/alice.pub"]}}
    msg = error_of(tmp_path, base_service(), people=people)
    assert msg.startswith("catalog.yaml: people.alice: public key file ")
    assert str(tmp_path / "keys" / "alice.pub") in msg and "cannot be read" in msg


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n", "must start with ed25519:"),
        ("ed25519:AAAA\n", "is not a valid Ed25519 key"),
        ("", "must hold one ed25519:... line (found 0 lines)"),
    ],
)
def test_an_invalid_key_file_names_the_person_and_the_path(tmp_path: Path, content: str, reason: str) -> None:
    (tmp_path / "alice.pub").write_text(content)
    people = {**person("bob"), "alice": {"key_files": ["{catalog_dir}/alice.pub"]}}
    msg = error_of(tmp_path, base_service(), people=people)
    assert msg.startswith(f"catalog.yaml: people.alice: public key file {tmp_path / 'alice.pub'}")
    assert reason in msg


def test_an_invalid_inline_key_is_refused(tmp_path: Path) -> None:
    people = {**person("bob"), "alice": {"keys": ["ed25519:not-base64!"]}}
    msg = error_of(tmp_path, base_service(), people=people)
    assert "people.alice.keys" in msg and "is not a valid Ed25519 key" in msg


def test_a_key_listed_for_two_people_is_refused(tmp_path: Path) -> None:
    people = {"alice": {"keys": [KEYS["alice"].public]}, "bob": {"keys": [KEYS["alice"].public]}}
    msg = error_of(tmp_path, base_service(), people=people)
    assert f"people.bob: key {KEYS['alice'].key_id} is also listed under people.alice" in msg


def test_the_evidence_key_is_nobodys_personal_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, base_service(), evidence={"keys": [KEYS["bob"].public]})
    assert "evidence: key" in msg and "also listed under people.bob" in msg


@pytest.mark.parametrize(
    ("role", "value", "where"),
    [
        ("cab", {"members": ["alice", "bob", "mallory"], "quorum": 2}, "services.greeter.cab.members"),
        ("ecab", ["mallory"], "services.greeter.ecab"),
        ("operators", ["mallory"], "services.greeter.operators"),
        ("change_managers", ["mallory"], "services.greeter.change_managers"),
        ("release_managers", ["mallory"], "services.greeter.release_managers"),
        (
            "change_models",
            [{"name": "docs", "description": "Docs", "requesters": ["mallory"]}],
            "services.greeter.change_models.0.requesters",
        ),
    ],
)
def test_every_role_member_is_a_declared_person_when_signatures_are_required(
    tmp_path: Path, role: str, value: Any, where: str
) -> None:
    svc = base_service()
    svc[role] = value
    msg = error_of(tmp_path, svc)
    assert f"{where}: mallory is not a declared person" in msg


def test_a_declared_person_with_no_key_is_refused(tmp_path: Path) -> None:
    svc = base_service()
    svc["operators"] = ["carol"]
    msg = error_of(tmp_path, svc, people={**person("alice", "bob"), "carol": {}})
    assert "people.carol: no public key (keys or key_files)" in msg


def test_signatures_off_allows_undeclared_people(tmp_path: Path) -> None:
    svc = base_service()
    svc["operators"] = ["mallory"]
    catalog = load_catalog(write(tmp_path, svc, signatures="off", people={}), data_dir=tmp_path / "data")
    trust = catalog.profile("greeter").trust
    assert trust.signatures == "off" and trust.people == []
    assert trust.members(Role.OPERATORS) == ["mallory"]


def test_signatures_is_required_or_off(tmp_path: Path) -> None:
    assert "signatures: Input should be 'required' or 'off'" in error_of(
        tmp_path, base_service(), signatures="no"
    )


def test_a_role_lists_a_person_once(tmp_path: Path) -> None:
    svc = base_service()
    svc["operators"] = ["alice", "alice"]
    assert "services.greeter.operators: alice listed twice" in error_of(tmp_path, svc)


def test_identity_providers_vouch_for_declared_people(tmp_path: Path) -> None:
    console = Signer.generate("console")
    svc = base_service()
    svc["operators"] = ["carol"]
    # carol has no key of her own: the console signs her in and vouches for her.
    people = {**person("alice", "bob"), "carol": {}}
    providers = {"console": {"keys": [console.public], "vouches_for": ["carol"]}}
    catalog = load_catalog(write(tmp_path, svc, people=people, identity_providers=providers))
    [provider] = catalog.profile("greeter").trust.providers
    assert provider.name == "console" and provider.keys == [console.public]
    assert provider.vouches_for == ["carol"]

    providers["console"]["vouches_for"] = ["mallory"]
    msg = error_of(tmp_path, svc, people=person("alice", "bob", "carol"), identity_providers=providers)
    assert "identity_providers.console.vouches_for: mallory is not a declared person" in msg
    msg = error_of(tmp_path, svc, people=person("alice", "bob", "carol"), identity_providers={"console": {}})
    assert "identity_providers.console: give at least one public key" in msg


def test_change_models_name_the_services_stages(tmp_path: Path) -> None:
    svc = base_service()
    svc["change_models"] = [
        {"name": "docs", "description": "Docs only", "stages": ["one", "everywhere"], "requesters": ["pat"]}
    ]
    msg = error_of(tmp_path, svc, people=person("alice", "bob", "pat"))
    assert "services.greeter.change_models: change model docs: unknown stage(s) everywhere" in msg
    assert "the service's stages are one, all" in msg

    svc["change_models"][0]["stages"] = ["one"]
    catalog = load_catalog(write(tmp_path, svc, people=person("alice", "bob", "pat")))
    assert catalog.profile("greeter").trust.change_models == [
        ChangeModel(
            name="docs", description="Docs only", stages=["one"], max_risk=Risk.LOW, requesters=["pat"]
        )
    ]


def test_read_trust_needs_only_the_catalog_file(tmp_path: Path) -> None:
    """An auditor has the catalog, not the services' workdirs, commands or executables."""
    svc = base_service(workdir="/nonexistent/greeter")
    svc["build"]["command"] = ["no-such-tool-xyz"]
    svc["operators"] = ["carol"]
    path = write(
        tmp_path, svc, people=person("alice", "bob", "carol"), evidence={"keys": [KEYS["pat"].public]}
    )
    assert "services.greeter.workdir" in error_of(
        tmp_path, svc, people=person("alice", "bob", "carol"), evidence={"keys": [KEYS["pat"].public]}
    )
    trust = read_trust(path)
    assert trust.evidence_keys == [KEYS["pat"].public]
    assert trust.service("greeter").members(Role.OPERATORS) == ["carol"]
    assert trust.service("greeter").quorum == 2
    with pytest.raises(UnknownService):
        trust.service("checkout")
    # Governance errors are the same as load_catalog's.
    svc["operators"] = ["mallory"]
    with pytest.raises(CatalogError) as exc:
        read_trust(write(tmp_path, svc))
    assert "services.greeter.operators: mallory is not a declared person" in str(exc.value)


def test_profile_and_read_trust_agree(tmp_path: Path) -> None:
    svc = base_service()
    svc["release_managers"] = ["carol"]
    path = write(tmp_path, svc, people=person("alice", "bob", "carol"))
    assert load_catalog(path).profile("greeter").trust == read_trust(path).service("greeter")


def test_conflicts_mode_defaults_to_warn_and_reaches_the_profile(tmp_path: Path) -> None:
    assert load_catalog(write(tmp_path, base_service())).profile("greeter").conflicts == ConflictMode.WARN
    svc = base_service()
    svc["conflicts"] = "block"
    assert load_catalog(write(tmp_path, svc)).profile("greeter").conflicts == ConflictMode.BLOCK
    svc["conflicts"] = "off"
    assert load_catalog(write(tmp_path, svc)).profile("greeter").conflicts == ConflictMode.OFF


def test_a_bad_conflicts_mode_is_a_one_line_error(tmp_path: Path) -> None:
    svc = base_service()
    svc["conflicts"] = "sometimes"
    msg = error_of(tmp_path, svc)
    assert "\n" not in msg
    assert msg.startswith("catalog.yaml: services.greeter.conflicts:")
    assert "'off', 'warn' or 'block'" in msg


# --- train suites (`train_suites:`, run on a train's combined staging) ---------------


def train_suite(**changes: Any) -> dict[str, Any]:
    suite = {"name": "combined", "command": ["{python}", "-m", "pytest", "{envs_dir}", "--junitxml={junit}"]}
    return {**suite, **changes}


def test_train_suites_load_with_their_workdir_and_the_envs_dir(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir()
    path = write(tmp_path, base_service(), train_suites=[train_suite(workdir="suites", timeout=30)])
    catalog = load_catalog(path, data_dir=tmp_path / "data")
    suite = catalog.train_suite("combined")
    assert (suite.workdir, suite.timeout, suite.cwd) == (tmp_path / "suites", 30, "{source_dir}")
    assert catalog.envs_dir == tmp_path / "data" / "envs"
    assert load_catalog(write(tmp_path, base_service()), data_dir=tmp_path).train_suites == []


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        (
            train_suite(command=["{python}", "{release_dir}/t.py"]),
            "train_suites.0.command: unknown placeholder(s) ['release_dir']",
        ),
        (train_suite(cwd="{env_dir}"), "train_suites.0.cwd: unknown placeholder(s) ['env_dir']"),
        (train_suite(name="Combined Tests"), "train_suites.0.name: String should match pattern"),
        (train_suite(command="pytest"), "train_suites.0.command: must be an argv list"),
        (train_suite(command=["./missing.sh"]), "train_suites.0: executable './missing.sh' not found"),
        (train_suite(workdir="nowhere"), "train_suites.0.workdir: directory"),
        (train_suite(timeout=0), "train_suites.0.timeout: Input should be greater than 0"),
        (train_suite(shell="bash"), "train_suites.0.shell: Extra inputs are not permitted"),
    ],
)
def test_a_bad_train_suite_is_a_one_line_error_naming_it(
    tmp_path: Path, suite: dict[str, Any], expected: str
) -> None:
    error = error_of(tmp_path, base_service(), train_suites=[suite])
    assert expected in error and "\n" not in error, error


def test_a_train_suite_name_twice_is_refused(tmp_path: Path) -> None:
    error = error_of(tmp_path, base_service(), train_suites=[train_suite(), train_suite()])
    assert error == "catalog.yaml: train_suites: a train suite name appears twice"


def test_the_example_catalog_has_the_combined_train_suite(tmp_path: Path) -> None:
    ensure_keys(tmp_path / "keys", [*people_names(EXAMPLE), WORKER])
    catalog = load_catalog(EXAMPLE, data_dir=tmp_path)
    suite = catalog.train_suite("combined")
    assert suite.workdir == EXAMPLE.parent / "train-tests"
    assert "{envs_dir}" in suite.command and train_suite_names(EXAMPLE) == ["combined"]
