"""The README's two set-up commands, `pip install . && curate demo` and
`bash tests/setup.sh && python -m pytest -q`, work in either order and leave a
working `curate` (issue 12: Numba's cache files, written inside the installed
package, outlived its uninstall and the leftover folder shadowed the checkout).

The install test builds fresh virtual environments (about a minute or two); select
it with `-m install`, leave it out with `-m "not install"`."""
from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("curation", "pipelines", "classifiers")


def _numba_modules() -> list[str]:
    """Every module of ours that compiles with Numba's cache (what `grep cache=True` finds)."""
    out = []
    for top in OURS:
        for path in sorted((REPO / top).rglob("*.py")):
            if re.search(r"jit\([^)]*\bcache\s*=\s*True", path.read_text(encoding="utf-8")):
                rel = path.relative_to(REPO).with_suffix("")
                out.append(".".join(p for p in rel.parts if p != "__init__"))
    return out


_PROBE = r"""
import json, sys
if sys.argv[1] == "numba-first":
    import numba  # noqa: F401
import importlib
from numba.core.dispatcher import Dispatcher
paths = {}
for name in sys.argv[2:]:
    mod = importlib.import_module(name)
    for attr, value in vars(mod).items():
        if isinstance(value, Dispatcher) and value._cache is not None and hasattr(value._cache, "cache_path"):
            paths[f"{name}.{attr}"] = value._cache.cache_path
print(json.dumps(paths))
"""


@pytest.mark.parametrize("order", ["curation-first", "numba-first"])
def test_numba_caches_outside_the_installed_package(tmp_path, order):
    """Every cached Numba function of ours keeps its machine code under
    $XDG_CACHE_HOME/curation/numba, never beside its source, even when the
    user imported numba before curation; a user's NUMBA_CACHE_DIR wins."""
    import json
    mods = _numba_modules()
    assert {"curation.minhash.cpu", "curation.filters.tokens"} <= set(mods), mods
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run([sys.executable, "-c", _PROBE, order, *mods], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)
    assert {p.rsplit(".", 1)[0] for p in paths} == set(mods)
    want = tmp_path / "xdg" / "curation" / "numba"
    for fn, path in paths.items():
        assert Path(path).is_relative_to(want), f"{fn} caches in {path}"

    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", _PROBE, order, "curation.minhash.cpu"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert all(Path(p).is_relative_to(tmp_path / "mine") for p in json.loads(out.stdout).values())


# -- the two README commands in a fresh virtual environment ------------------------

def _site_dirs() -> list[Path]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [Path(d) for d in dirs if d in sys.path and Path(d).is_dir()]


def _is_ours(name: str) -> bool:
    """Our packages, their metadata and our editable-install hooks."""
    return re.match(rf"^(__editable__[._]+)?({'|'.join(OURS)})([-._]|$)", name) is not None


def _fresh_venv(tmp: Path) -> Path:
    """A venv that sees this interpreter's installed dependencies (through a folder of
    links, so none of our own installs leak in) and can run pip offline."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    deps = tmp / "deps"
    deps.mkdir()
    for d in _site_dirs():
        for entry in d.iterdir():
            if not _is_ours(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir, not a bare path line: the dependencies' own .pth files must run too
    (Path(purelib) / "_curation_test_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    return venv


def _copy_source(dst: Path) -> Path:
    """What the package is built from, copied so the builds write nothing into this checkout."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "runs", "*.pyc")
    (dst / "tests").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in (*OURS, "configs"):
        shutil.copytree(REPO / name, dst / name, ignore=skip)
    shutil.copy2(REPO / "tests" / "setup.sh", dst / "tests" / "setup.sh")
    return dst


def _offline_build_possible() -> str | None:
    """Why pip cannot build this package here without the network, or None."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec
    if sys.platform == "win32" or shutil.which("bash") is None:
        return "the set-up script needs bash"
    if find_spec("venv") is None:
        return "the venv module is absent"
    for dist, need in (("pip", 21), ("setuptools", 68), ("wheel", 0)):
        try:
            have = version(dist)
        except PackageNotFoundError:
            return f"{dist} is not installed, so pip cannot build offline"
        if int(re.match(r"\d+", have).group()) < need:
            return f"{dist} {have} is older than an offline build needs ({need})"
    return None


class _Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.src = _copy_source(tmp / "src")
        self.venv = _fresh_venv(tmp)
        self.py = self.venv / "bin" / "python"
        self.purelib = Path(subprocess.run([str(self.py), "-c", "import sysconfig; "
                                            "print(sysconfig.get_paths()['purelib'])"],
                                           capture_output=True, text=True, check=True).stdout.strip())
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PIP_", "NUMBA_", "PYTHON")) and k != "VIRTUAL_ENV"}
        self.env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                        VIRTUAL_ENV=str(self.venv), XDG_CACHE_HOME=str(tmp / "xdg"),
                        # offline, and only this package (its dependencies come from the links);
                        # pip reads PIP_NO_BUILD_ISOLATION=0 as "no build isolation"
                        PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0",
                        PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", CURATION_SETUP_NO_BROWSER="1")

    def run(self, *cmd, cwd=None, timeout=600):
        out = subprocess.run(list(cmd), cwd=cwd or self.tmp, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        shown = " ".join(map(str, cmd))
        assert out.returncode == 0, f"{shown} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def install_regular(self):       # the README's first command, its install
        self.run(str(self.py), "-m", "pip", "install", str(self.src))

    def install_editable(self):      # the README's second command, its install
        self.run("bash", str(self.src / "tests" / "setup.sh"), cwd=self.src)

    def use_numba(self):
        """A small real run, so that Numba compiles and writes its cache."""
        self.run("curate", "dedup", "--demo", "--output", str(self.tmp / "runs" / "dedup"))

    def leftovers(self) -> list[str]:
        return sorted(str(p.relative_to(self.purelib)) for p in self.purelib.glob("curation/**/*.nb[ic]"))

    def check_curate_works(self, where: Path):
        self.run("curate", "--help")
        out = self.run(str(self.py), "-c", "import curation, curation.filters as f; assert f.PRESETS; "
                       "print(curation.__file__)", cwd=self.tmp)
        assert Path(out.stdout.strip()).resolve() == (where / "curation" / "__init__.py").resolve()


@pytest.mark.install
@pytest.mark.timeout(1200)
def test_readme_setup_commands_in_either_order(tmp_path):
    why = _offline_build_possible()
    if why:
        pytest.skip(why)

    # the README's order: `pip install . && curate demo`, then `bash tests/setup.sh`
    a = _Env(tmp_path / "a")
    a.install_regular()
    a.use_numba()
    assert a.leftovers() == [], "Numba wrote its cache inside the installed package"
    assert list((a.tmp / "xdg" / "curation" / "numba").rglob("*.nbi")), "Numba wrote no cache at all"
    # what an older release left behind: setup.sh clears it rather than let it shadow the checkout
    stale = a.purelib / "curation" / "filters" / "__pycache__" / "tokens._fmix-73.py311.nbi"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"\x00")
    a.install_editable()
    assert not (a.purelib / "curation").exists()
    a.check_curate_works(a.src)

    # the other order
    b = _Env(tmp_path / "b")
    b.install_editable()
    b.use_numba()
    assert not list((b.src / "curation").rglob("*.nb[ic]")), "Numba wrote its cache inside the checkout"
    b.install_regular()
    b.check_curate_works(b.purelib)
