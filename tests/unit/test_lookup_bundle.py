"""The lookup function's bundle (infra/lookup/bundle.py) works alone, without the repository."""

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
USER = "0b0d8f5e-6a4f-4e8e-9a57-2a9d8f0b8a11"

# Runs with `python -I -S`: no site-packages .pth files (so no editable install of this
# repository), no current directory; then sees only the bundle and the venv's packages.
PROBE = """
import json, sys
bundle, site_packages = sys.argv[1], json.loads(sys.argv[2])
sys.path[:] = [bundle, *sys.path, *site_packages]
import main
import functions_framework
app = functions_framework.create_app(target="lookup_consent", source=bundle + "/main.py")
client = app.test_client()
bare = client.get("/")
unconfigured = client.get("/", query_string={"domain": "example.com", "user": sys.argv[3]})
print(json.dumps({
    "callable": callable(main.lookup_consent),
    "beam": sorted(name for name in sys.modules if name.split(".")[0] == "apache_beam"),
    "files": sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}),
    "bare": [bare.status_code, bare.headers["Content-Type"], bare.get_json()],
    "unconfigured": [unconfigured.status_code, unconfigured.get_json()],
}))
"""


@cache
def bundle_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lookup_bundle", ROOT / "infra/lookup/bundle.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python infra/lookup/bundle.py OUT --zip OUT.zip`, as `make lookup-bundle` runs it."""
    out = tmp_path_factory.mktemp("lookup") / "bundle"
    subprocess.run(
        [sys.executable, str(ROOT / "infra/lookup/bundle.py"), str(out), "--zip", f"{out}.zip"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def probe(bundle: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(bundle), json.dumps(SITE_PACKAGES), USER],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},  # no BIGTABLE_EMULATOR_HOST, no LOOKUP_*
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def bundle_files(bundle: Path) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


def test_bundle_holds_the_entry_point_and_only_the_lookups_code(bundle: Path) -> None:
    files = bundle_files(bundle) - {".lookup-bundle"}
    assert files == {
        "main.py",
        "requirements.txt",
        "stream/__init__.py",
        "stream/names.py",
        *(f"stream/lookup/{p.name}" for p in (ROOT / "stream/lookup").glob("*.py")),
        *(f"schemas/{p.name}" for p in (ROOT / "schemas").glob("*.py")),
    }
    main = (bundle / "main.py").read_text()
    assert "from stream.lookup.http import lookup_consent" in main
    with zipfile.ZipFile(f"{bundle}.zip") as zipped:
        assert set(zipped.namelist()) == files
        assert zipped.read("main.py").decode() == main


def test_bundle_imports_without_the_repository_or_beam(bundle: Path, probe: dict[str, Any]) -> None:
    assert probe["callable"] is True
    assert probe["beam"] == []
    for file in probe["files"]:
        allowed = (str(bundle), *SITE_PACKAGES)  # the venv may live inside the checkout
        outside = file.startswith(str(ROOT)) and not file.startswith(allowed)
        assert not outside, f"loaded from the repository, not the bundle: {file}"
    assert str(bundle / "stream/lookup/http.py") in probe["files"]


def test_bundled_function_answers_without_bigtable(probe: dict[str, Any]) -> None:
    status, content_type, body = probe["bare"]
    assert (status, content_type) == (400, "application/json")
    assert body["error"] == "invalid input"
    # No LOOKUP_PROJECT and no emulator: refuses to pick a project rather than read real data.
    assert probe["unconfigured"] == [500, {"error": "internal error"}]


def distribution_of(module: str) -> str:
    """The installed distribution that provides `module` (a dotted name)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    top = module.split(".")[0]
    candidates = importlib.metadata.packages_distributions()[top]
    prefix = "/".join(module.split(".")) + "/"
    for name in candidates:
        files = importlib.metadata.distribution(name).files or []
        if any(str(f).startswith(prefix) or str(f) == prefix[:-1] + ".py" for f in files):
            return str(bundle_module().distribution(name))
    raise AssertionError(f"no distribution provides {module} among {candidates}")


def third_party_imports(bundle: Path) -> set[str]:
    """Dotted modules the bundle's code imports that are neither standard nor bundled."""
    local = {p.name for p in bundle.iterdir()} | {"main"}
    found: set[str] = set()
    for path in bundle.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.add(name)
    return found


def requires(distribution: str) -> set[str]:
    """Direct dependencies of an installed distribution (markers ignored)."""
    declared = importlib.metadata.requires(distribution) or []
    return {bundle_module().distribution(r) for r in declared if "extra ==" not in r}


def test_requirements_name_what_the_function_imports(bundle: Path) -> None:
    lines = (bundle / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    named = {bundle_module().distribution(r) for r in requirements}
    assert named == {"functions-framework", "google-cloud-bigtable", "pydantic"}
    imported = {distribution_of(module) for module in third_party_imports(bundle)}
    # Each import is a named requirement or comes with one (flask with functions-framework).
    provided = named | {dep for name in named for dep in requires(name)}
    assert imported <= provided, imported - provided
    assert named <= imported, named - imported  # nothing named that the code does not use


def test_requirements_carry_pyprojects_ranges(bundle: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["lookup"]]
    lines = set((bundle / "requirements.txt").read_text().splitlines())
    for name in ("functions-framework", "google-cloud-bigtable", "pydantic"):
        (spec,) = [r for r in declared if re.match(rf"{name}\b(?!-)", r)]
        assert spec in lines


def test_bundle_refuses_to_replace_a_directory_it_did_not_build(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")

    with pytest.raises(SystemExit, match="not built by this script"):
        bundle_module().build(tmp_path)

    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_zip_is_reproducible(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    files = bundle_module().build(again)
    bundle_module().write_zip(again, files, tmp_path / "again.zip")

    assert (tmp_path / "again.zip").read_bytes() == Path(f"{bundle}.zip").read_bytes()
