"""The CrypTen shim still patches what the pinned torch moved, and nothing else.

When torch is upgraded these fail on purpose: check CrypTen on the new torch by
hand, then update ``secure_compute/_crypten_compat.py``, its pin and these tests.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

from secure_compute._crypten_compat import MOVED_MODULES, TORCH_VERSION, crypten_module

REPO = Path(__file__).resolve().parents[2]


def test_torch_is_the_release_the_shim_was_written_for():
    assert torch.__version__.split("+")[0] == TORCH_VERSION, (
        f"torch {torch.__version__} is installed; the CrypTen shim was written for "
        f"{TORCH_VERSION}: re-check secure_compute/_crypten_compat.py"
    )


def test_pyproject_pins_that_torch_for_both_extras():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name in ("torch", "mpc"):
        assert f"torch=={TORCH_VERSION}" in extras[name], name


def test_bootstrap_installs_the_crypten_the_shim_knows():
    bootstrap = (REPO / "scripts" / "bootstrap").read_text()
    assert re.search(r"^CRYPTEN=crypten==0\.4\.1$", bootstrap, re.M)
    assert "--no-deps" in bootstrap


def test_the_moved_modules_are_still_moved_in_a_clean_interpreter():
    """Without the shim the old name is gone (the shim is needed) and the new one exists."""
    checks = "; ".join(
        f"import importlib.util as u; assert u.find_spec({old!r}) is None, 'back: {old}'; "
        f"import {new}"
        for old, new in MOVED_MODULES.items()
    )
    result = subprocess.run(
        [sys.executable, "-c", checks], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_crypten_imports_through_the_shim_with_its_defaults():
    crypten = crypten_module()
    assert crypten.__version__ == "0.4.1"
    assert crypten.cfg.encoder.precision_bits == 16
    registration = sys.modules["torch.onnx._internal.registration"]
    assert registration is sys.modules[next(iter(MOVED_MODULES.values()))]
