"""Neural networks audited from a declared architecture and training recipe (issue 12).

A researcher who submits an ONNX file declares, as JSON, the network's layers and
the recipe it was trained with (``docs/nn-declaration.md``). tre-audit checks that
the declared layers are the ONNX file's, builds the network itself in PyTorch and
trains shadow models with its own loop: no code of the researcher's ever runs.

Imports are split so that the core install (no torch) can still read and check a
declaration:

- :mod:`attacks.nn.schema` and :mod:`attacks.nn.matching` import no torch (intake
  checks a declaration against the ONNX file with them).
- :mod:`attacks.nn.torch_model` imports torch, the ``tre-audit[torch]`` extra:
  import it only when a recipe is trained.
- :mod:`attacks.nn.teaching` imports torch only in the functions that train.
"""
