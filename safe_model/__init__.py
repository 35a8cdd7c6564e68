"""Safe loading of untrusted models, shared by ``attacks`` and ``secure_compute``.

A pure library (no Django, and it imports neither ``attacks`` nor
``secure_compute``): the skops allowlist, structural validation of compiled
estimators before anything predicts with them, the checks of an ONNX graph and
the classifier that runs it, and a resource-limited sandbox
process in which uploaded models are loaded and run. Everything it refuses
raises :class:`safe_model.exceptions.ModelRefused` with one sentence that can
be shown to a researcher as it is.
"""
