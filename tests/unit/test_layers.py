"""Dependencies point one way: core <- Beam stages, adapters (io/) <- the launcher and tools.

The layers are written here, not read from the code: a module in a layer may import its own
layer and those below it, never a sibling or one above. The core loads no Beam and no Google
Cloud client at all (checked in a fresh interpreter, module by module).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = {
    "schemas.base",
    "schemas.consent",
    "schemas.telemetry",
    "schemas.registry",
    "stream.names",
    "stream.pipeline.messages",
    "stream.pipeline.refused",
    "stream.pipeline.letters",
    "stream.pipeline.validate",
    "stream.pipeline.config",
    "stream.pipeline.tables",
    "stream.pipeline.rollups.windows",
    "stream.pipeline.rollups.facts",
    "stream.pipeline.rollups.accumulators",
    "stream.pipeline.rollups.rows",
}
CONTRACTS = {"stream.pipeline.metrics", "stream.pipeline.outputs"}  # Beam, shared by both sides
STAGES = {
    "stream.pipeline.parse",
    "stream.pipeline.event_time",
    "stream.pipeline.deadletters",
    "stream.pipeline.acknowledge",
    "stream.pipeline.build",
    "stream.pipeline.rollups.preaggregate",
    "stream.pipeline.rollups.gate",
    "stream.pipeline.rollups.accumulate",
    "stream.pipeline.rollups.transform",
}
PACKAGES = {"stream", "stream.pipeline", "stream.pipeline.io", "stream.pipeline.rollups"}
# What each layer may import of this project (besides itself).
ALLOWED = {
    "core": {"core"},
    "contracts": {"core", "contracts"},
    "stages": {"core", "contracts", "stages"},
    "io": {"core", "contracts", "io"},
}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module in CONTRACTS:
        return "contracts"
    if module in STAGES:
        return "stages"
    if module.startswith("stream.pipeline.io."):
        return "io"
    return "outside"  # the launcher, local tooling, the CLIs: they may import any layer


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The project modules `path` imports (`from a.b import c` is a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"stream", "schemas"}}


def modules() -> dict[str, Path]:
    paths = [*(ROOT / "stream").rglob("*.py"), *(ROOT / "schemas").rglob("*.py")]
    return {module_name(p): p for p in paths if "__main__" not in p.name}


def test_every_pipeline_module_has_a_layer() -> None:
    pipeline = {m for m in modules() if m.startswith("stream.pipeline.")} - PACKAGES
    assert {m for m in pipeline if layer(m) == "outside"} == set()


def test_dependencies_point_one_way() -> None:
    wrong = []
    for module, path in sorted(modules().items()):
        own = layer(module)
        if own == "outside":
            continue
        for imported in sorted(imports_of(path) - PACKAGES):
            if layer(imported) not in ALLOWED[own]:
                wrong.append(f"{module} ({own}) imports {imported} ({layer(imported)})")
    assert wrong == []


def test_the_validator_loads_no_pubsub_or_bigtable_client() -> None:
    code = (
        "import stream.pipeline.validate, sys; print([m for m in sys.modules if "
        "m.startswith(('google.cloud.pubsub', 'google.cloud.bigtable'))])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", sorted(CORE))
def test_a_core_module_loads_neither_beam_nor_a_google_cloud_client(module: str) -> None:
    code = (
        f"import {module}, sys; print(sorted({{m.split('.')[0] + '.' + m.split('.')[1] "
        "if m.startswith('google.') and '.' in m else m.split('.')[0] for m in sys.modules "
        "if m.startswith(('apache_beam', 'google.cloud.', 'google.pubsub', 'grpc'))}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"{module} loads {result.stdout.strip()}"
