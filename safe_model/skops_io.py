"""``skops.io``, imported without importing torch.

skops lists scikit-learn's estimators when it is imported (``all_estimators``), and
the ``pkgutil`` walk behind that imports every subpackage on its way, the array-API
shim for torch (``sklearn.externals.array_api_compat.torch``) included, which imports
torch whenever it is installed: 2 s and 200 MB more in every process that reads a
model, the sandbox's zygote, the CLI and the web process among them. Nothing here
hands torch tensors to scikit-learn (array-API dispatch stays off), so the shim is
made unimportable before skops is; the walk skips a package it cannot import. The
neural-network code imports torch itself, where it needs it.
"""

import sys

sys.modules.setdefault("sklearn.externals.array_api_compat.torch", None)

import skops.io  # noqa: E402 (after the line above, which is why this module exists)

dump, loads, get_untrusted_types = skops.io.dump, skops.io.loads, skops.io.get_untrusted_types
