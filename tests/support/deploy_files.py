"""Reading the deployment files as Docker and Compose read them, without a Docker engine.

- ``dockerfile_stages``: a Dockerfile's stages and instructions (continuations joined,
  comments dropped, as BuildKit does).
- ``dockerignore_rules`` / ``dockerignored``: whether a path of the repository reaches the build
  context (Docker's pattern rules: ``*`` and ``?`` stay within a directory, ``**`` crosses them,
  a rule matches a path or any directory above it, ``!`` re-includes, the last match wins).
- ``compose`` and the accessors after it: docker-compose.yml with Compose's variable
  interpolation applied (defaults, as with no ``.env`` file), a service's environment, its
  mounts, and which repository path a container sees at a given path.

``ENTRYPOINT``, ``IMAGE_SERVICES`` and ``BIN`` are shared by the image's, the containers' and
the Compose file's tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tests.support.workers import REPO_ROOT

ENTRYPOINT = REPO_ROOT / "deploy" / "docker" / "entrypoint.sh"
#: the Compose services that run the image this repository builds
IMAGE_SERVICES = ("migrate", "worker", "control-plane")
#: this virtualenv's scripts, as /opt/venv/bin is the image's
BIN = Path(sys.executable).parent

# --- Dockerfile -------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags and the remaining words (JSON or shell form)."""
        text = self.arguments.strip()
        words = json.loads(text) if text.startswith("[") else shlex.split(text)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                values[name] = value
        return values

    def local_sources(self) -> list[str]:
        """What the stage's COPY and ADD take from the build context (not from a stage)."""
        sources = []
        for instruction in self.all("COPY") + self.all("ADD"):
            flags, words = instruction.flags_and_words()
            if "from" not in flags:
                sources.extend(words[:-1])
        return sources


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages with their instructions."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments (and parser directives), also between continuation lines
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if (pending + line).strip():
            logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        if not stages:
            raise ValueError(f"Dockerfile: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(keyword, arguments))
    return stages


@cache
def dockerfile() -> list[Stage]:
    return dockerfile_stages((REPO_ROOT / "Dockerfile").read_text())


# --- .dockerignore ----------------------------------------------------------------------------

Rules = list[tuple[bool, re.Pattern[str]]]


def _pattern_regex(pattern: str) -> str:
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "[":  # a character class, as written
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return regex


def dockerignore_rules(text: str) -> Rules:
    """(excludes?, pattern) per rule of a .dockerignore."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((not line.startswith("!"), re.compile(_pattern_regex(pattern) + r"\Z")))
    return rules


def dockerignored(path: str, rules: Rules) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


def repository_rules() -> Rules:
    return dockerignore_rules((REPO_ROOT / ".dockerignore").read_text())


def repository_files() -> list[str]:
    """Tracked and new (not git-ignored) files: what a fresh checkout holds."""
    done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return [line for line in done.stdout.splitlines() if (REPO_ROOT / line).is_file()]


def under(path: str, source: str) -> bool:
    """Whether ``path`` is ``source`` or inside it."""
    return path == source or path.startswith(source.rstrip("/") + "/")


# --- docker-compose.yml -----------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``$VAR``, ``$$``) applied to every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group() == "$$":
            return "$"
        name, operator, argument, bare = match.groups()
        given = env.get(name or bare)
        missing = given is None or (operator in (":-", ":?") and not given)
        if operator in (":-", "-") and missing:
            return str(argument)
        if operator in (":?", "?") and missing:
            raise ValueError(f"${{{name}}} is required: {argument}")
        return given or ""

    return _VARIABLE.sub(substitute, value)


@cache
def compose_text() -> str:
    return (REPO_ROOT / "docker-compose.yml").read_text()


def compose_raw() -> dict[str, Any]:
    """docker-compose.yml as written (a fresh copy: callers may change it)."""
    loaded = yaml.safe_load(compose_text())
    assert isinstance(loaded, dict)
    return loaded


def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it with no .env file: defaults interpolated."""
    resolved = interpolate(compose_raw(), {})
    assert isinstance(resolved, dict)
    return resolved


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    found: dict[str, Any] = services[name]
    return found


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(name: str) -> list[str]:
    given = service(name).get("command", [])
    return list(given) if isinstance(given, list) else shlex.split(given)


def mounts(name: str) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes, short or long syntax."""
    found = []
    for volume in service(name).get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found.append((source, target))
    return found


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def repo_path_in(name: str, container_path: str) -> Path | None:
    """The repository path a service sees at ``container_path`` through a bind mount."""
    binds = [(s, t) for s, t in mounts(name) if is_bind(s) and under(container_path, t)]
    if not binds:
        return None
    source, target = max(binds, key=lambda bind: len(bind[1]))
    rest = container_path[len(target) :].lstrip("/")
    return (REPO_ROOT / source / rest).resolve()


def healthcheck_text(name: str) -> str:
    check = service(name).get("healthcheck")
    assert check and not check.get("disable"), f"service {name} has no healthcheck"
    test = check["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def seconds(duration: str) -> float:
    """A Compose or Prometheus duration (``1m30s``, ``60s``, ``2m``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|[smhdwy])", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(number) * units[unit] for number, unit in parts)
