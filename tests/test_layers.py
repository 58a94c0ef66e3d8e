"""The import graph points down: library, then services, then composition (README, "Layers").

Every module of the installed package (``tinyfed/`` and the folders it links in: ``aggregator/``,
``gateway/``, ``bench/``) is parsed with :mod:`ast`, never imported, and each of its imports
(top-level, inside functions, under ``TYPE_CHECKING``, and ``importlib.import_module("...")``
with a literal name) is checked against three rules:

1. a module never imports a module of a higher layer (:data:`LAYERS`); a ``cli`` module is
   the command's, so it is composition whatever package it sits in;
2. the services (:data:`PEERS`) never import each other;
3. nothing, tests and scripts included, imports the bare names ``aggregator``, ``gateway`` or
   ``bench``: they exist only as ``tinyfed.aggregator``, ``tinyfed.gateway``, ``tinyfed.bench``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIBRARY, SERVICES, COMPOSITION = 0, 1, 2
LAYER_NAMES = ("library", "services", "composition")

#: Package or module prefix -> layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "tinyfed": LIBRARY,  # the package's __init__ only: every module below is listed
    "tinyfed.errors": LIBRARY,
    "tinyfed.help": LIBRARY,
    "tinyfed.mqtt": LIBRARY,
    "tinyfed.listen": LIBRARY,
    "tinyfed.link": LIBRARY,
    "tinyfed.features": LIBRARY,
    "tinyfed.model": LIBRARY,
    "tinyfed.pretrain": COMPOSITION,  # tinyfed pretrain: corpus (data) + training + export (model)
    "tinyfed.data": LIBRARY,
    "tinyfed.aggregator": SERVICES,
    "tinyfed.gateway": SERVICES,
    "tinyfed.testbed": SERVICES,
    "tinyfed.cli": COMPOSITION,
    "tinyfed.config": COMPOSITION,
    "tinyfed.fleet": COMPOSITION,
    "tinyfed.experiments": COMPOSITION,
    "tinyfed.bench": COMPOSITION,
    "tinyfed.deploy": COMPOSITION,
    "tinyfed.board": COMPOSITION,
}

#: Packages of the services layer that never import each other.
PEERS: tuple[str, ...] = ("tinyfed.aggregator", "tinyfed.gateway", "tinyfed.testbed")

#: Names that must never be imported bare (they are subpackages of tinyfed).
BARE = frozenset({"aggregator", "gateway", "bench"})

#: Bare names in shell, docs and configuration: ``python -m gateway``, ``from aggregator ...``.
BARE_TEXT = re.compile(r"(-m\s+|^\s*from\s+|^\s*import\s+)(aggregator|gateway|bench)\b", re.M)


@dataclass(frozen=True)
class Import:
    """One import: who imports what, and where."""

    importer: str  # dotted module name of the importing module
    path: Path
    line: int
    target: str  # dotted name as written (absolute)
    names: tuple[str, ...]  # for "from target import a, b": ("a", "b"); else ()


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for the installed package, each file once.

    ``tinyfed/`` is walked without following links; each link in it (``tinyfed/aggregator ->
    ../aggregator``) adds the folder it points to under the link's name.
    """
    found: dict[str, Path] = {}

    def walk(folder: Path, dotted: str) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink():
                if entry.is_dir():
                    walk(entry.resolve(), f"{dotted}.{entry.name}")
            elif entry.is_dir() and (entry / "__init__.py").exists():
                walk(entry, f"{dotted}.{entry.name}")
            elif entry.suffix == ".py":
                name = dotted if entry.stem == "__init__" else f"{dotted}.{entry.stem}"
                found[name] = entry

    walk(root / "tinyfed", "tinyfed")
    return found


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every import in ``path`` (the module ``module``), relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, path, node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            yield Import(module, path, node.lineno, base, tuple(a.name for a in node.names))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(module, path, node.lineno, node.args[0].value, ())


def layer_of(module: str) -> int | None:
    """The layer of a tinyfed module (``None`` if no prefix of :data:`LAYERS` matches)."""
    if module.rpartition(".")[2] == "cli":
        return COMPOSITION
    best: str | None = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    if best == "tinyfed" and module != "tinyfed":
        return None  # a new top-level module must be given its layer
    return None if best is None else LAYERS[best]


def peer_of(module: str) -> str | None:
    """The service package ``module`` belongs to, if any."""
    return next((p for p in PEERS if module == p or module.startswith(p + ".")), None)


def targets(imp: Import, known: dict[str, Path]) -> list[str]:
    """The tinyfed modules (or packages) an import binds (a bare ``gateway...`` as tinyfed's)."""
    target = f"tinyfed.{imp.target}" if imp.target.partition(".")[0] in BARE else imp.target
    if target.partition(".")[0] != "tinyfed":
        return []
    if not imp.names:
        return [target]
    return [f"{target}.{n}" if f"{target}.{n}" in known else target for n in imp.names]


def violations(modules: dict[str, Path]) -> list[str]:
    """What breaks the rules, one line per import, naming the file, line and both modules."""
    found: list[str] = []
    for module, path in sorted(modules.items()):
        here = layer_of(module)
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if here is None:
            found.append(f"{where}: {module} has no layer (add it to LAYERS in {__name__})")
            continue
        for imp in imports_of(module, path):
            if imp.target.partition(".")[0] in BARE:
                found.append(f"{where}:{imp.line}: bare import of {imp.target!r}")
            for target in targets(imp, modules):
                there = layer_of(target)
                if there is None:
                    found.append(f"{where}:{imp.line}: {target} has no layer")
                elif there > here:
                    found.append(
                        f"{where}:{imp.line}: {module} ({LAYER_NAMES[here]}) imports "
                        f"{target} ({LAYER_NAMES[there]})"
                    )
                mine, theirs = peer_of(module), peer_of(target)
                if mine and theirs and mine != theirs:
                    found.append(f"{where}:{imp.line}: {module} imports its peer {target}")
    return found


def test_layers_only_point_down() -> None:
    modules = package_modules()
    assert "tinyfed.aggregator.rounds" in modules  # the links are followed
    assert "tinyfed.gateway.bridge" in modules
    assert "tinyfed.bench.link" in modules
    bad = violations(modules)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_check_sees_what_it_must(tmp_path: Path) -> None:
    """The checker itself: an upward import, a peer import and a bare name are each found."""
    src = {
        "tinyfed.link.bad": "from tinyfed.gateway import bridge\nimport aggregator.rounds\n",
        "tinyfed.aggregator.bad": "from tinyfed.gateway.uplink import Uplink\n",
        "tinyfed.data.bad": "from .. import cli\n",
        "tinyfed.testbed.bad": "from tinyfed.mqtt import session\n",
    }
    modules: dict[str, Path] = {}
    for name, text in src.items():
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text(text)
    for name in (
        "tinyfed.cli",
        "tinyfed.gateway.bridge",
        "tinyfed.gateway.uplink",
        "tinyfed.mqtt.session",
    ):
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text("")
    bad = "\n".join(violations(modules))
    assert "tinyfed.link.bad (library) imports tinyfed.gateway.bridge (services)" in bad
    assert "bare import of 'aggregator.rounds'" in bad
    assert "tinyfed.aggregator.bad imports its peer tinyfed.gateway.uplink" in bad
    assert "tinyfed.data.bad (library) imports tinyfed.cli (composition)" in bad
    assert "tinyfed.testbed.bad" not in bad


def test_no_bare_service_names_anywhere() -> None:
    """Tests, scripts, docs, the Dockerfile and compose never use the bare names either."""
    bad: list[str] = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for imp in imports_of(module, path):
            if imp.target.partition(".")[0] in BARE:
                bad.append(f"{path.relative_to(ROOT)}:{imp.line}: bare import of {imp.target!r}")
    texts = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    texts += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "bench").glob("*.md"))
    texts += sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file())
    texts += sorted(p for p in (ROOT / ".ci").iterdir() if p.is_file())
    for path in texts:
        for match in BARE_TEXT.finditer(path.read_text()):
            line = path.read_text().count("\n", 0, match.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()!r}")
    assert not bad, "bare service names:\n" + "\n".join(bad)
