"""Build the consent lookup function's source directory: `python infra/lookup/bundle.py OUT`."""

# Cloud Functions wants main.py and requirements.txt at the source root. The bundle holds those
# two and exactly the code the function imports: schemas/, stream/__init__.py, stream/names.py,
# stream/lookup/ (no Beam, pipeline, load generator or tests). Standard library only (3.11+).

import argparse
import re
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "stream/lookup")
MODULES = ("stream/__init__.py", "stream/names.py")
ENTRY = "stream/lookup/main.py"  # also the bundle's main.py
# What the function imports directly, pinned with pyproject.toml's own ranges.
REQUIREMENTS = ("functions-framework", "google-cloud-bigtable", "pydantic")
MARKER = ".lookup-bundle"  # marks a directory this script may replace
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources give the same zip (and its hash)


def distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement (`apache-beam[gcp]==2` -> apache-beam)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def requirement_lines(pyproject: Path) -> list[str]:
    """REQUIREMENTS as pyproject.toml states them (dependencies or the `lookup` extra)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["lookup"]]
    lines = []
    for name in REQUIREMENTS:
        found = [r for r in declared if distribution(r) == name]
        if len(found) != 1:
            raise SystemExit(f"{pyproject}: expected one requirement for {name}, found {found}")
        lines.append(found[0])
    return lines


def sources(root: Path) -> list[Path]:
    """The Python files the function needs, relative to the repository root."""
    files = [Path(module) for module in MODULES]
    for package in PACKAGES:
        files += [p.relative_to(root) for p in sorted((root / package).glob("*.py"))]
    return files


def prepare(out: Path) -> None:
    """An empty OUT_DIR; refuses to replace a non-empty directory it did not build."""
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise SystemExit(f"{out} exists and was not built by this script: not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).touch()


def build(out: Path, root: Path = ROOT) -> list[Path]:
    """Write the bundle into `out`; return the files written, relative to it."""
    prepare(out)
    written = [Path("main.py"), Path("requirements.txt")]
    shutil.copyfile(root / ENTRY, out / "main.py")
    header = "# Written by infra/lookup/bundle.py from pyproject.toml.\n"
    lines = requirement_lines(root / "pyproject.toml")
    (out / "requirements.txt").write_text(header + "".join(f"{line}\n" for line in lines))
    for relative in sources(root):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, out / relative)
        written.append(relative)
    return written


def write_zip(out: Path, files: list[Path], archive: Path) -> None:
    """A reproducible zip of the bundle (sorted entries, fixed dates), e.g. for Terraform."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for relative in sorted(files):
            info = zipfile.ZipInfo(relative.as_posix(), date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zipped.writestr(info, (out / relative).read_bytes())


def main(argv: list[str] | None = None) -> int:
    """Build OUT_DIR (and, with --zip, an archive of it)."""
    parser = argparse.ArgumentParser(description="Build the consent lookup function's source.")
    parser.add_argument("out_dir", type=Path, help="created (or replaced, if built here before)")
    parser.add_argument("--zip", type=Path, default=None, help="also write this zip of it")
    args = parser.parse_args(argv)
    files = build(args.out_dir)
    print(f"bundle: {args.out_dir} ({len(files)} files)")
    if args.zip:
        write_zip(args.out_dir, files, args.zip)
        print(f"zip:    {args.zip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
