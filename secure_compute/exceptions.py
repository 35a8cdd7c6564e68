"""Domain errors of the secure_compute library.

Every error carries one sentence that can be shown to the client or the
operator as it is: no traceback text, no key material and no record values.
"""


class SecureComputeError(Exception):
    """Base class of every error the secure_compute library raises on purpose."""


class AttestationError(SecureComputeError, ValueError):
    """An enclave attestation document was refused by the verifier."""


class EnclaveError(SecureComputeError, ValueError):
    """A sealed request, sealed response or enclave set-up was refused."""


class EnclaveUnavailable(SecureComputeError, RuntimeError):
    """The enclave process is not running or did not answer in time."""


class HEError(SecureComputeError, ValueError):
    """An encrypted request, response, context or model was refused for HE inference."""


class UnsupportedModel(HEError):
    """The model cannot be served under homomorphic encryption (not linear, or not allowed)."""


class EnclaveGone(EnclaveUnavailable):
    """The enclave (or its host) has ended for good: its endpoint must be deployed again."""


class RowLimitExceeded(EnclaveError):
    """A sealed request holds more rows than the caller may still send (its query budget)."""


class MPCError(SecureComputeError, ValueError):
    """A secure-inference request, message, certificate or model was refused."""


class MPCUnavailable(SecureComputeError, RuntimeError):
    """A party of a secure-inference session is down, left mid-protocol or stopped answering."""
