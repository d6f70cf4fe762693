"""The production deployment files agree with the code.

No Docker engine runs where the tests run, so ``docker compose config`` cannot check
docker-compose.yml: these tests parse it (with compose's ``${VAR:-default}`` interpolation) and
hold it, the Dockerfile, .dockerignore and deploy/ to what the code reads: the settings fields,
the entry modules, the register map and the simulator's command line.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from api.settings import ApiSettings
from api.settings import load_settings as load_api_settings
from bridge.settings import BridgeSettings
from bridge.settings import load_settings as load_bridge_settings
from plc.config import load_register_map
from plc.registers import RegisterMap, uniform_register_map
from simulator.__main__ import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLE_ENV = ROOT / "deploy" / "example.env"

OFFICIAL_IMAGES = {"kafka": "apache/kafka", "postgres": "postgres", "redis": "redis"}
OUR_SERVICES = ("bridge", "api", "simulator")
PREFIXES = {"bridge": "BRIDGE_", "api": "API_"}
SETTINGS: dict[str, type[msgspec.Struct]] = {"bridge": BridgeSettings, "api": ApiSettings}
LEFT_TO_DEFAULT = {"bridge": {"instance_id"}, "api": set()}
"""Fields compose must not set: the bridge's instance id is each replica's own host name."""
REQUIRED = {
    "bridge": {"kafka_bootstrap", "database_url", "redis_url", "register_map"},
    "api": {"kafka_bootstrap", "database_url", "redis_url", "tokens", "host"},
}
"""Fields whose default only suits a loopback development machine."""
SHARED = ("kafka_bootstrap", "database_url", "redis_url", "cache_namespace", "commands_topic")
"""Fields the bridge and the API must agree on."""
SECRETS = ("POSTGRES_PASSWORD", "API_TOKENS")
SAMPLE_ENV = {"POSTGRES_PASSWORD": "sample-password-0123", "API_TOKENS": "ci:operator:" + "ab" * 32}
"""Values for the required variables, standing in for an operator's .env."""

_REFERENCE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` like compose."""

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = env.get(name)
        usable = present if op is None or not op.startswith(":") else (present or None)
        if op in (":-", "-"):
            return usable if usable is not None else arg
        if op in (":?", "?"):
            if usable is None:
                raise MissingVariable(f"{name}: {arg}")
            return usable
        return present or ""

    return _REFERENCE.sub(expand, value)


def interpolate_all(node: Any, env: Mapping[str, str]) -> Any:
    """`node` with every string value interpolated (compose interpolates values, not keys)."""
    if isinstance(node, dict):
        return {key: interpolate_all(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_all(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in `node`."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def referenced_variables(node: Any) -> set[str]:
    """The names of the variables interpolated anywhere in `node`."""
    names: set[str] = set()
    for text in strings(node):
        for match in _REFERENCE.finditer(text):
            name = match.group("braced") or match.group("bare")
            if name:
                names.add(name)
    return names


@functools.cache
def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved, nothing interpolated)."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose(env: Mapping[str, str] = SAMPLE_ENV) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with `env` as the operator's .env."""
    interpolated = interpolate_all(raw_compose(), env)
    assert isinstance(interpolated, dict)
    return interpolated


def services(env: Mapping[str, str] = SAMPLE_ENV) -> dict[str, dict[str, Any]]:
    """The services of the interpolated compose file."""
    found = compose(env)["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, from the mapping or the ``KEY=VALUE`` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    """A service's command as an argument list."""
    cmd = service.get("command")
    if isinstance(cmd, str):
        return shlex.split(cmd)
    assert isinstance(cmd, list), "the service must have a command"
    return [str(arg) for arg in cmd]


def effective_settings(name: str) -> Any:
    """The settings the bridge or the API process reads in its container."""
    env = environment(services()[name])
    return load_bridge_settings(env) if name == "bridge" else load_api_settings(env)


def healthcheck_text(service: Mapping[str, Any]) -> str:
    """The health check's command as one string."""
    check = service.get("healthcheck") or {}
    test = check.get("test")
    assert test, "no health check"
    assert not check.get("disable"), "the health check is disabled"
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), f"a health check test starts CMD or CMD-SHELL: {test}"
    return " ".join(str(part) for part in test[1:])


def published_container_ports(service: Mapping[str, Any]) -> set[int]:
    """The container ports a service publishes on the host."""
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's volumes as container path -> source."""
    found: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found[entry["target"]] = entry["source"]
        else:
            source, target = str(entry).split(":")[:2]
            found[target] = source
    return found


def simulator_map() -> RegisterMap:
    """The register map the simulator service serves, with its compose host name."""
    args = build_parser().parse_args(command(services()["simulator"])[3:])
    assert args.map is None, "the simulator serves a uniform map in compose"
    ports = [("simulator", args.port + i) for i in range(args.endpoints)]
    return uniform_register_map(ports, args.barriers_per_endpoint, unit_id=args.unit_id)


# --- services and images -------------------------------------------------------------------


def test_the_expected_services_exist() -> None:
    assert set(services()) == {"kafka", "postgres", "redis", "bridge", "api", "simulator"}


@pytest.mark.parametrize(("service", "repository"), sorted(OFFICIAL_IMAGES.items()))
def test_backing_services_use_pinned_official_images(service: str, repository: str) -> None:
    image = services()[service]["image"]
    name, _, tag = image.partition(":")
    assert name == repository, f"{service} must use the official image {repository}, not {image}"
    assert tag not in ("", "latest"), f"{service}: pin a version, not {image!r}"
    assert "build" not in services()[service]


@pytest.mark.parametrize("service", sorted(OUR_SERVICES))
def test_our_services_run_the_image_built_from_the_dockerfile(service: str) -> None:
    spec = services()[service]
    build = spec["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert spec["image"] == services()["api"]["image"], "one image for all three"


def test_the_kafka_broker_runs_in_kraft_mode() -> None:
    env = environment(services()["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a base64 UUID"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "the bridge creates the topics"


# --- settings: names, completeness, defaults -------------------------------------------------


def field_names(cls: type[msgspec.Struct]) -> set[str]:
    """The settings' fields, i.e. the variables ``<PREFIX><FIELD>`` the process reads."""
    return {field.name for field in msgspec.structs.fields(cls)}


def test_every_settings_variable_in_compose_is_a_real_field_of_its_process() -> None:
    for name, spec in raw_compose()["services"].items():
        for key in environment(spec):
            for process, prefix in PREFIXES.items():
                if key.startswith(prefix):
                    assert name == process, f"{key} is set on {name}, but only {process} reads it"
                    assert key.removeprefix(prefix).lower() in field_names(SETTINGS[process]), (
                        f"{name}: {key} is not a field of {SETTINGS[process].__name__}"
                    )


def test_interpolated_settings_variables_feed_the_variable_of_the_same_name() -> None:
    """A ``BRIDGE_X: ${BRIDGE_Y:-...}`` typo would silently drop the operator's BRIDGE_X."""
    for name, spec in raw_compose()["services"].items():
        for key, value in environment(spec).items():
            for variable in referenced_variables(value):
                if variable.startswith(tuple(PREFIXES.values())):
                    assert variable == key, f"{name}: {key} takes its value from {variable}"


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_compose_sets_every_setting_but_the_per_replica_ones(process: str) -> None:
    prefix, cls = PREFIXES[process], SETTINGS[process]
    keys = {key.removeprefix(prefix).lower() for key in environment(services()[process])}
    assert keys | LEFT_TO_DEFAULT[process] == field_names(cls), (
        f"{process}: expose every setting in docker-compose.yml"
    )
    assert not keys & LEFT_TO_DEFAULT[process]
    assert REQUIRED[process] <= keys


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_the_defaults_in_compose_are_the_codes_defaults(process: str) -> None:
    prefix, cls = PREFIXES[process], SETTINGS[process]
    defaults = {field.name: field.default for field in msgspec.structs.fields(cls)}
    passthrough = re.compile(r"\$\{[A-Za-z0-9_]+:?-(?P<default>[^}]*)\}")
    checked = 0
    for key, value in environment(raw_compose()["services"][process]).items():
        match = passthrough.fullmatch(value)
        if match is None:
            continue
        field = key.removeprefix(prefix).lower()
        converted = msgspec.convert({field: match["default"]}, cls, strict=False)
        assert getattr(converted, field) == defaults[field], f"{key}: default differs from code"
        checked += 1
    assert checked >= 5, "the tunables take their defaults from the code"


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_the_settings_load_in_the_container(process: str) -> None:
    effective_settings(process)  # raises ValueError naming a variable of the wrong type


def test_the_bridge_and_the_api_agree() -> None:
    bridge, api = effective_settings("bridge"), effective_settings("api")
    for field in SHARED:
        assert getattr(bridge, field) == getattr(api, field), field


# --- wiring: URLs, ports, listeners --------------------------------------------------------


def kafka_listeners(variable: str) -> dict[str, tuple[str, int]]:
    """A Kafka listener list as name -> (host, port)."""
    listeners: dict[str, tuple[str, int]] = {}
    for entry in environment(services()["kafka"])[variable].split(","):
        name, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_kafka_bootstrap_is_the_brokers_internal_listener(process: str) -> None:
    settings = effective_settings(process)
    advertised = kafka_listeners("KAFKA_ADVERTISED_LISTENERS")
    inter_broker = environment(services()["kafka"])["KAFKA_INTER_BROKER_LISTENER_NAME"]
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.rpartition(":")
        assert (host, int(port)) == advertised[inter_broker], server
        assert host == "kafka"
    listening = kafka_listeners("KAFKA_LISTENERS")
    assert listening[inter_broker][1] == advertised[inter_broker][1]


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_database_url_is_the_postgres_service(process: str) -> None:
    url = urlsplit(effective_settings(process).database_url)
    postgres = environment(services()["postgres"])
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"] == SAMPLE_ENV["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_redis_url_is_the_redis_service(process: str) -> None:
    url = urlsplit(effective_settings(process).redis_url)
    assert url.scheme == "redis"
    assert (url.hostname, url.port or 6379) == ("redis", 6379)


def test_the_api_listens_on_all_interfaces_and_is_published() -> None:
    api = effective_settings("api")
    assert api.host == "0.0.0.0"
    assert api.port in published_container_ports(services()["api"])


def test_postgres_and_redis_are_not_published() -> None:
    for name in ("postgres", "redis"):
        assert not services()[name].get("ports"), f"{name} stays inside the compose network"


def test_the_bridge_metrics_port_is_on_and_exposed() -> None:
    bridge = effective_settings("bridge")
    assert bridge.metrics_port
    expose = {int(port) for port in services()["bridge"].get("expose", [])}
    assert bridge.metrics_port in expose
    assert not services()["bridge"].get("ports"), "published ports would stop --scale bridge=N"
    assert "container_name" not in services()["bridge"], "replicas need their own names"


def seconds(duration: str) -> float:
    """A compose duration such as ``1m30s`` in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_docker_waits_for_the_bridges_graceful_shutdown() -> None:
    grace = seconds(services()["bridge"]["stop_grace_period"])
    assert grace > effective_settings("bridge").shutdown_grace


# --- health checks and start order ---------------------------------------------------------


@pytest.mark.parametrize("service", ["kafka", "postgres", "redis", "bridge", "api", "simulator"])
def test_every_service_has_a_health_check(service: str) -> None:
    assert healthcheck_text(services()[service])


def test_the_health_checks_probe_what_each_service_serves() -> None:
    found = {name: healthcheck_text(spec) for name, spec in services().items()}
    kafka_port = kafka_listeners("KAFKA_LISTENERS")["INTERNAL"][1]
    assert "kafka-broker-api-versions.sh" in found["kafka"]
    assert f"--bootstrap-server localhost:{kafka_port}" in found["kafka"]
    postgres = environment(services()["postgres"])
    assert "pg_isready" in found["postgres"]
    assert postgres["POSTGRES_USER"] in found["postgres"]
    assert "redis-cli ping" in found["redis"]
    api, bridge = effective_settings("api"), effective_settings("bridge")
    assert f"http://127.0.0.1:{api.port}/health" in found["api"]
    assert f"http://127.0.0.1:{bridge.metrics_port}/metrics" in found["bridge"]
    control = build_parser().parse_args(command(services()["simulator"])[3:]).control_port
    assert control, "the simulator's control interface is its health check"
    assert f"http://127.0.0.1:{control}/barriers" in found["simulator"]


@pytest.mark.parametrize(
    ("service", "needs"),
    [("bridge", {"kafka", "postgres", "redis"}), ("api", {"kafka", "postgres", "redis", "bridge"})],
)
def test_services_start_once_what_they_need_is_healthy(service: str, needs: set[str]) -> None:
    depends = services()[service]["depends_on"]
    assert isinstance(depends, dict), "the long form, with conditions"
    assert set(depends) == needs
    for name, condition in depends.items():
        assert condition["condition"] == "service_healthy", f"{service} -> {name}"
        assert services()[name].get("healthcheck"), name


def test_only_the_simulator_is_behind_a_profile() -> None:
    for name, spec in services().items():
        expected = ["simulator"] if name == "simulator" else None
        assert spec.get("profiles") == expected, name
    for name, spec in services().items():
        assert "simulator" not in (spec.get("depends_on") or {}), f"{name} must run without it"


# --- data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "target"),
    [
        ("kafka", "/var/lib/kafka/data"),
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
    ],
)
def test_data_lives_in_named_volumes(service: str, target: str) -> None:
    source = mounts(services()[service]).get(target)
    assert source in compose()["volumes"], f"{service}: {target} on a named volume"


def test_kafka_writes_its_log_to_the_volume() -> None:
    assert environment(services()["kafka"])["KAFKA_LOG_DIRS"] in mounts(services()["kafka"])


# --- the register map ----------------------------------------------------------------------


def mounted_register_map_file() -> Path:
    """The host file mounted where BRIDGE_REGISTER_MAP points, with the shipped default."""
    target = effective_settings("bridge").register_map
    source = mounts(services()["bridge"])[target]
    return (ROOT / source).resolve()


def test_the_mounted_register_map_exists_and_loads() -> None:
    path = mounted_register_map_file()
    assert path == ROOT / "deploy" / "barriers.toml"
    assert load_register_map(path).barriers


def test_the_register_map_drives_the_simulator_service() -> None:
    deployed, simulated = load_register_map(mounted_register_map_file()), simulator_map()
    assert {e.host for e in deployed.endpoints} == {"simulator"}

    def layout(register_map: RegisterMap) -> dict[int, tuple[str, int, int, object]]:
        return {
            barrier.id: (endpoint.host, endpoint.port, endpoint.unit_id, barrier.points)
            for barrier in register_map.barriers
            for endpoint in [register_map.endpoint(barrier.endpoint)]
        }

    assert layout(deployed) == layout(simulated)
    assert [e.name for e in deployed.endpoints] == [e.name for e in simulated.endpoints], (
        "the simulator's control interface names the endpoints"
    )
    listen = build_parser().parse_args(command(services()["simulator"])[3:]).host
    assert listen == "0.0.0.0"
    exposed = {int(port) for port in services()["simulator"]["expose"]}
    assert {e.port for e in deployed.endpoints} <= exposed


# --- secrets and the operator's .env -------------------------------------------------------


def example_env() -> dict[str, str]:
    """deploy/example.env's variables, the commented-out ones included."""
    found: dict[str, str] = {}
    for line in EXAMPLE_ENV.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(\S*).*", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def test_secrets_come_from_the_operators_env_and_are_required() -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose({"API_TOKENS": SAMPLE_ENV["API_TOKENS"]})
    with pytest.raises(MissingVariable, match="API_TOKENS"):
        compose({"POSTGRES_PASSWORD": SAMPLE_ENV["POSTGRES_PASSWORD"]})
    raw = raw_compose()["services"]
    assert environment(raw["api"])["API_TOKENS"].startswith("${API_TOKENS:?")
    assert environment(raw["postgres"])["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_no_secret_is_committed() -> None:
    for secret in SECRETS:
        assert example_env()[secret] == "", f"{secret} has no committed value"
    for path in (COMPOSE_FILE, EXAMPLE_ENV):
        assert not re.search(r"\b[0-9a-fA-F]{64}\b", path.read_text()), f"a hash in {path.name}"


def test_example_env_documents_every_variable_compose_reads() -> None:
    documented = set(example_env())
    missing = referenced_variables(raw_compose()) - documented
    assert not missing, f"document {sorted(missing)} in deploy/example.env"


def test_example_env_states_the_codes_defaults() -> None:
    for variable, value in example_env().items():
        for process, prefix in PREFIXES.items():
            if variable.startswith(prefix) and value:
                field = variable.removeprefix(prefix).lower()
                converted = msgspec.convert({field: value}, SETTINGS[process], strict=False)
                assert converted == SETTINGS[process](), f"{variable}={value} is not the default"


# --- the image -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A CMD or ENTRYPOINT argument in exec (JSON) form."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), "exec form, so that the process gets SIGTERM"
    return [str(arg) for arg in parsed]


def first_party_imports(package: str) -> set[str]:
    """The top-level first-party packages that `package`'s modules import."""
    ours = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    found: set[str] = set()
    for source in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {name.split(".")[0] for name in names} & ours
    return found


def third_party_imports(package: str) -> set[str]:
    """The top-level modules outside the project and the standard library `package` imports."""
    ours = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    found: set[str] = set()
    for source in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - ours - set(sys.stdlib_module_names) - {"__future__"}


def image_packages() -> set[str]:
    """Every first-party package the three entry points need, transitively."""
    needed = {"bridge", "api", "simulator"}
    while True:
        more = set().union(*(first_party_imports(package) for package in needed)) - needed
        if not more:
            return needed
        needed |= more


def dockerignore_includes(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last matching pattern wins)."""
    included = True
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = "".join(
            "(.*/)?" if token == "**/" else ".*" if token == "**" else "[^/]*" if token == "*"
            else "[^/]" if token == "?" else re.escape(token)
            for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern)
        )  # fmt: skip
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            included = negated
    return included


def test_the_image_is_python_311_slim_and_runs_as_a_user() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases, "no FROM"
    assert all(base == "python:3.11-slim" for base in bases), bases
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, "the final stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]


def test_the_image_installs_the_project_without_extras() -> None:
    installs = [
        args for keyword, args in dockerfile_instructions() if keyword == "RUN" and "pip" in args
    ]
    project = [args for args in installs if re.search(r"pip install\b.*\s\.(\s|$)", args + " ")]
    assert project, "pip install . installs the project"
    for args in installs:
        assert "[" not in args, f"no extras (dev, stack) in the image: {args}"
        assert " -e " not in f" {args} ", "a real install, not an editable one"


def test_the_default_command_and_compose_commands_run_modules_that_exist() -> None:
    instructions = dockerfile_instructions()
    assert not [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmd = exec_form(next(args for keyword, args in reversed(instructions) if keyword == "CMD"))
    for argv in [cmd] + [command(services()[name]) for name in sorted(OUR_SERVICES)]:
        assert argv[:2] == ["python", "-m"], argv
        assert (ROOT / argv[2] / "__main__.py").is_file(), f"no module {argv[2]}"
        assert argv[2] in image_packages()
    for name in OUR_SERVICES:
        assert command(services()[name])[2] == name, f"the {name} service runs {name}"


def test_the_image_contains_every_package_the_entry_points_import() -> None:
    copied = {
        source.strip("/")
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and "--from" not in args
        for source in [arg for arg in args.split() if not arg.startswith("--")][:-1]
    }
    assert image_packages() == {"bridge", "api", "simulator", "plc", "store"}
    for package in image_packages():
        assert package in copied, f"COPY {package}/ into the image"
        assert dockerignore_includes(f"{package}/__init__.py"), f".dockerignore drops {package}"
    for needed in ("pyproject.toml", "README.md"):  # the build reads both
        assert needed in copied
        assert dockerignore_includes(needed)


@pytest.mark.parametrize(
    "path", [".env", ".venv/bin/python", ".stack/run.json", ".git/HEAD", "api/__pycache__/a.pyc"]
)
def test_local_state_and_secrets_stay_out_of_the_build_context(path: str) -> None:
    assert not dockerignore_includes(path)


def runtime_distributions() -> set[str]:
    """The distributions `pip install .` brings: the dependencies, transitively, no extras."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pending = [(Requirement(spec), "") for spec in pyproject["project"]["dependencies"]]
    seen: set[tuple[str, str]] = set()  # (distribution, extra)
    while pending:
        requirement, active_extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": active_extra}):
            continue
        name = canonicalize_name(requirement.name)
        for extra in {""} | requirement.extras:
            if (name, extra) not in seen:
                seen.add((name, extra))
                pending.extend(
                    (Requirement(spec), extra)
                    for spec in importlib.metadata.requires(requirement.name) or []
                )
    return {name for name, _ in seen}


def test_the_runtime_dependencies_provide_every_import_of_the_image() -> None:
    """Nothing the image runs may need a package that only the dev or stack extras bring."""
    installed = runtime_distributions()
    providers = importlib.metadata.packages_distributions()
    for package in sorted(image_packages()):
        for module in sorted(third_party_imports(package)):
            distributions = {canonicalize_name(d) for d in providers.get(module, [])}
            assert distributions & installed, f"{package} imports {module}, not a dependency"
