#!/usr/bin/env bash
# Set up a machine to run the tests: the system Chromium (the report's browser test
# drives it through Playwright; Playwright's own browser download cannot work without
# the internet), Debian's Python documentation (real HTML pages for the WARC tests,
# tests/warc_fixture.py) and the package with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

# CURATION_SETUP_NO_BROWSER=1 skips the system packages (tests/test_setup_sequence.py uses it)
PACKAGES=""
[ -x /usr/bin/chromium ] || PACKAGES="$PACKAGES chromium"
[ -f /usr/share/doc/python3.11/html/index.html ] || PACKAGES="$PACKAGES python3.11-doc"
if [ -z "${CURATION_SETUP_NO_BROWSER:-}" ] && [ -n "$PACKAGES" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    install_packages() { $SUDO apt-get install -y --no-install-recommends $PACKAGES; }
    # a stale or missing package list is the usual cause of a failed install
    if ! install_packages; then
        $SUDO apt-get update
        install_packages
    fi
fi

# The megatron extra (megatron-core, whose reader the export tests use) needs torch.
# PyPI's Linux torch is the CUDA build: about 3 GB of wheels with its nvidia-* packages,
# 5.5 GB installed. The tests need only the CPU build (190 MB, 1 GB installed), so it
# comes first, from PyTorch's CPU index (or a CPU wheel in pip's configured find-links),
# and the extra then finds torch installed; failing that, it brings PyPI's build. The
# olmo extra is left out: its cached-path pins rich<14, filelock<4 and huggingface-hub<2,
# which would downgrade what the rest of the suite runs on (docs/mixture.md).
if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install --retries 1 --timeout 30 "torch>=2.6" \
        --index-url "${CURATION_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
        || echo "tests/setup.sh: no CPU build of torch installed; the megatron extra brings PyPI's"
fi
python -m pip install -e ".[test,megatron,dask]"

# A `curation`, `pipelines` or `classifiers` folder left in site-packages without its
# __init__.py (an earlier `pip install .` whose uninstall left cache files behind, such
# as Numba's before it kept them elsewhere) would shadow this checkout as a namespace
# package and break `curate`: remove such a folder, unless it holds Python sources.
python - <<'EOF'
import os, shutil, site, sys, sysconfig

dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
if site.ENABLE_USER_SITE:
    dirs.add(site.getusersitepackages())
for d in sorted(dirs):
    for name in ("curation", "pipelines", "classifiers"):
        path = os.path.join(d, name)
        if not os.path.isdir(path) or os.path.exists(os.path.join(path, "__init__.py")):
            continue
        sources = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs if f.endswith(".py")]
        if sources:
            sys.exit(f"tests/setup.sh: {path} shadows this checkout but holds {sources[0]}: remove it by hand")
        print(f"tests/setup.sh: removing {path} (left over from an earlier install; it would shadow this checkout)")
        shutil.rmtree(path)
EOF

# `curate` must import this checkout from anywhere, not another copy: an older install
# (a stale editable one pointing at a checkout that moved, or a copy in another site
# directory) is named here rather than found later by a failing `curate`.
checkout="$(pwd -P)"
(cd / && python - "$checkout" <<'EOF2'
import importlib, os, sys
want = sys.argv[1]
for name in ("curation", "pipelines", "classifiers"):
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        sys.exit(f"tests/setup.sh: outside the checkout, import {name} fails ({e}): "
                 f"an older install shadows it; pip uninstall curation, then rerun")
    path = os.path.realpath(os.path.dirname(mod.__file__ or next(iter(mod.__path__))))
    if not path.startswith(os.path.realpath(want) + os.sep):
        sys.exit(f"tests/setup.sh: {name} imports from {path}, not this checkout ({want}): "
                 f"remove that copy, then rerun")
EOF2
)
