"""CrypTen 0.4.1 on the pinned torch: the one place that works around CrypTen's age.

CrypTen is unmaintained since 2022. On torch 2.13 its import fails because
``crypten.nn.onnx_converter`` imports ``torch.onnx._internal.registration``,
which torch moved to ``torch.onnx._internal.torchscript_exporter.registration``.
:func:`crypten_module` puts the moved module under its old name before the
import. Nothing here changes CrypTen's arithmetic; tre-audit never uses
CrypTen's ONNX converter (whose ``torch.onnx.export`` would also need
``dynamo=False`` now), so that is not patched.

``tests/secure_compute/test_crypten_compat.py`` fails loudly when the torch this
patches changes: a new pin must be checked by hand and this module updated.
"""

from __future__ import annotations

import importlib
import sys
import warnings

#: The torch release this shim was written against (pyproject.toml pins the same).
TORCH_VERSION = "2.13.0"

#: Old module name -> where torch keeps it now.
MOVED_MODULES = {
    "torch.onnx._internal.registration": "torch.onnx._internal.torchscript_exporter.registration",
}


def crypten_module():
    """Import CrypTen on the pinned torch and return the module.

    Raises
    ------
    ImportError
        If CrypTen or torch is not installed (``scripts/bootstrap`` installs both).
    """
    for old, new in MOVED_MODULES.items():
        if old not in sys.modules:
            try:
                importlib.import_module(old)
            except ImportError:
                sys.modules[old] = importlib.import_module(new)
    with warnings.catch_warnings():  # crypten.models warns that torchvision is absent
        warnings.simplefilter("ignore")
        import crypten
    return crypten
