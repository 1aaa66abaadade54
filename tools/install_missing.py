"""Install what a requirements file asks for that this Python lacks or has too old, and nothing else.

Every notebook's set-up cell runs it (as a script: the kernel must not import the libraries it
may upgrade): `python tools/install_missing.py REQUIREMENTS [MODULE ...]`, the MODULEs being the
top-level modules the kernel has imported already.

- Nothing is missing or too old: it prints nothing and pip never runs.
- Otherwise it installs only those requirements. Upgrading one can make pip upgrade what it
  depends on past a pin of a package the runtime already has (diffusers 0.42 needs a newer
  huggingface_hub than Colab's, which gradio and sentence-transformers pin): pip's `--dry-run
  --report` shows what would change, the installed packages it would break are added to the
  request, so pip's resolver keeps them working (their own version when it can) and prints no
  dependency `ERROR`.
- It exits with RESTART (75) and says so only when it replaced a package whose modules the
  kernel has imported: Python keeps the old ones until the runtime restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare Python: pip carries its own copy
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

RESTART = 75
PIP = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]


class RequirementsError(ValueError):
    """A requirements line this installer cannot read, named by file and line number."""


def _text(path: Path) -> str:
    """The file's text: UTF-8 (a leading BOM dropped), else Latin-1, which reads any byte, so a
    comment saved by an old editor still reads."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of `path` that apply to this Python (markers evaluated), comments skipped.
    A pip-only line (`-r`, `--hash`, a bare VCS URL, a `\\` continuation) is refused by file and line."""
    requirements = []
    for number, raw in enumerate(_text(path).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as error:
            raise RequirementsError(
                f"{path}, line {number}: {raw.strip()!r} is not a plain requirement ({error}). This installer "
                "reads one 'name[extras] specifier ; marker' per line: pip options (-r, --extra-index-url, "
                "--hash), bare VCS URLs and '\\' continuations are not supported here.") from None
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unmet(requirements: list[Requirement]) -> list[tuple[Requirement, str | None]]:
    """(requirement, installed version or None) for each requirement this Python does not meet."""
    result = []
    for requirement in requirements:
        version = installed_version(requirement.name)
        if (version is None or not requirement.specifier.contains(version, prereleases=True)
                or _extras_unmet(requirement)):
            result.append((requirement, version))
    return result


def _extras_unmet(requirement: Requirement) -> bool:
    """Whether a requirement the installed package declares for a requested extra
    (`accelerate[test-prod]` needs pytest) is missing or out of range."""
    if not requirement.extras:
        return False
    for line in metadata.distribution(requirement.name).requires or []:
        try:
            needed = Requirement(line)
        except InvalidRequirement:
            continue
        if needed.marker is None or needed.marker.evaluate({"extra": ""}) or not any(
                needed.marker.evaluate({"extra": e}) for e in requirement.extras):
            continue  # a requirement of the package itself, or of another extra
        version = installed_version(needed.name)
        if version is None or not needed.specifier.contains(version, prereleases=True):
            return True
    return False


def installed() -> dict[str, metadata.Distribution]:
    """Every installed distribution by canonical name (the first on sys.path wins, as for imports)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def broken_dependents(changes: dict[str, str], dists: dict[str, metadata.Distribution]) -> set[str]:
    """Installed packages (not among `changes`) whose requirements exclude a version in `changes`
    ({canonical name: version pip would install})."""
    broken = set()
    for name, dist in dists.items():
        if name in changes:
            continue
        for line in dist.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            new = changes.get(canonicalize_name(requirement.name))
            if new is not None and not requirement.specifier.contains(new, prereleases=True):
                broken.add(name)
    return broken


def dry_run(request: list[str]) -> dict[str, str]:
    """{canonical name: version} of what `pip install request` would install, nothing installed."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        subprocess.run([*PIP, "--quiet", "--dry-run", "--report", str(report), *request], check=True)
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}


def plan(request: list[str], dists: dict[str, metadata.Distribution], rounds: int = 5) -> tuple[list[str], dict[str, str]]:
    """`request` plus the installed packages it would otherwise break, and what pip will install."""
    request = list(request)
    for _ in range(rounds):
        changes = dry_run(request)
        named = {canonicalize_name(Requirement(r).name) for r in request}
        extra = sorted(broken_dependents(changes, dists) - named)
        if not extra:
            break
        # Named bare: pip keeps the installed version when it fits and moves it only when it must.
        request += extra
    return request, changes


def imported_distributions(modules: set[str]) -> dict[str, set[str]]:
    """{canonical distribution name: the given top-level modules it provides}."""
    result: dict[str, set[str]] = {}
    for module, names in metadata.packages_distributions().items():
        if module in modules:
            for name in names:
                result.setdefault(canonicalize_name(name), set()).add(module)
    return result


def _older(old: str | None, new: str) -> bool:
    try:
        return old is not None and Version(new) < Version(old)
    except InvalidVersion:
        return False


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.splitlines()[0], "\nusage: install_missing.py REQUIREMENTS [MODULE ...]", file=sys.stderr)
        return 2
    requirements_file, modules = Path(argv[0]), set(argv[1:])
    try:
        needed = unmet(read_requirements(requirements_file))
    except RequirementsError as error:
        print(error, file=sys.stderr)
        return 2
    if not needed:
        return 0
    print(f"Installing from {requirements_file.name} what this Python lacks or has too old: "
          + ", ".join(f"{r.name} {v or 'missing'} (needs {r.specifier or 'any'})" for r, v in needed), flush=True)
    dists = installed()
    before = {name: dist.version for name, dist in dists.items()}
    request, changes = plan([str(r) for r, _ in needed], dists)
    subprocess.run([*PIP, "--quiet", *request], check=True)
    changed = {name: (before.get(name), version) for name, version in changes.items()}
    print("Installed: " + ", ".join(f"{n} {old} -> {new}" if old else f"{n} {new}" for n, (old, new) in sorted(changed.items())
                                    if old != new) + ".", flush=True)
    if any(_older(old, new) for old, new in changed.values()):
        print("(a lower version replaced a newer one above: another installed package needs it)")
    in_use = imported_distributions(modules)
    stale = sorted(f"{name} (imported as {', '.join(sorted(in_use[name]))})"
                   for name, (old, new) in changed.items() if old is not None and old != new and name in in_use)
    if stale:
        print("\n" + "!" * 78 + "\nRESTART NEEDED: this kernel imported the old version of " + "; ".join(stale)
              + ".\nRestart the runtime (Colab: Runtime > Restart session), then run this cell again.\n" + "!" * 78,
              flush=True)
        return RESTART
    return 0


if __name__ == "__main__":
    sys.exit(main())
