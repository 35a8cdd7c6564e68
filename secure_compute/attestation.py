"""Nitro-shaped attestation documents: a simulated root, signing and verification.

There is no TEE hardware here. The enclave is a separate worker process, and
its attestation document follows the AWS Nitro Enclaves format so that the
verifier can later trust the AWS Nitro root instead of the local one:

- the document is a ``COSE_Sign1`` structure (RFC 9052) ``[protected,
  unprotected, payload, signature]`` with protected header ``{1: -35}``
  (ES384), an empty unprotected header, and an ECDSA P-384 signature in raw
  ``r || s`` form over ``["Signature1", protected, b"", payload]``;
- the payload is a CBOR map with Nitro's fields and limits: ``module_id``,
  ``digest`` (``"SHA384"``), ``timestamp`` (ms since the epoch), ``pcrs``,
  ``certificate`` (DER of the leaf that signed), ``cabundle`` (DER, root
  first), ``public_key``, ``user_data`` and ``nonce``.

Measurement mapping (``pcrs``):

- PCR0 ("enclave image" in Nitro): SHA-384 of the enclave's code, see
  :func:`secure_compute.enclave.code_measurement_compute`;
- PCR16 (the first PCR a Nitro enclave may extend itself): the approved
  model, extended once from zero as Nitro does,
  ``SHA-384(48 zero bytes || SHA-256(model file))``; see :func:`model_pcr`.

``public_key`` holds the enclave's raw 32-byte X25519 HPKE key. ``user_data``
is a CBOR map ``{"version": 1, "model_sha256": <32 bytes>, "n_features":
int, "simulated": bool}``; it is informative only, the check is on PCR16.

SIMULATED: a locally made root has ``OU=SIMULATED`` in its subject and so do
the leaves it issues; ``module_id`` starts with ``SIMULATED-`` and
``user_data`` says ``simulated``. :func:`attestation_verify` refuses any of
these unless the caller passes ``accept_simulated=True``: a simulated enclave
proves which code and model answer, but not that the host cannot read them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from secure_compute._cbor import cbor_loads_strict
from secure_compute.exceptions import AttestationError

# --------------------------------------------------------------------------- constants

#: COSE: CBOR tag of COSE_Sign1, header label "alg", and ES384 (ECDSA P-384
#: with SHA-384), the only algorithm Nitro uses and so the only one accepted.
COSE_SIGN1_TAG = 18
COSE_HEADER_ALG = 1
COSE_ALG_ES384 = -35
PROTECTED_HEADER = cbor2.dumps({COSE_HEADER_ALG: COSE_ALG_ES384})
SIGNATURE_CONTEXT = "Signature1"

#: P-384 coordinates are 48 bytes, so a raw COSE signature ``r || s`` is 96.
ES384_COORDINATE_BYTES = 48

#: Nitro's register digest and PCR length (SHA-384).
DIGEST = "SHA384"
PCR_BYTES = 48

#: PCR indices: 0 is Nitro's enclave image; 16 is the first PCR an enclave
#: may extend and lock itself, so a real Nitro enclave can record the model
#: it loaded exactly as this simulation does.
PCR_CODE = 0
PCR_MODEL = 16

#: Nitro's syntactic limits (aws-nitro-enclaves-nsm-api, attestation_process.md).
MAX_PAYLOAD_BYTES = 16384
MAX_CERT_BYTES = 1024
MAX_PUBLIC_KEY_BYTES = 1024
MAX_USER_DATA_BYTES = 512
MAX_NONCE_BYTES = 512
MAX_PCRS = 32

#: A whole document: the payload plus header, signature and CBOR framing.
MAX_DOCUMENT_BYTES = MAX_PAYLOAD_BYTES + 1024

#: Nitro's chain is root, three intermediates and the leaf; allow some slack.
MAX_CABUNDLE = 8

#: Shortest nonce a verifier accepts: 128 bits cannot be guessed in advance,
#: so an old document cannot carry a future nonce.
MIN_NONCE_BYTES = 16

#: A document older than this is stale (a replay, or a slow relay), and one
#: dated further than the skew in the future comes from a wrong clock.
DEFAULT_MAX_AGE_SECONDS = 300
CLOCK_SKEW_SECONDS = 60

#: The word that marks everything a local, hardware-less root signs.
SIMULATED_MARKER = "SIMULATED"
MODULE_ID_PREFIX = "SIMULATED-"

#: The local root lives as long as a TRE project; enclave leaves are short,
#: like Nitro's, and the enclave reissues them before they expire.
ROOT_VALIDITY = dt.timedelta(days=3 * 365)
LEAF_VALIDITY = dt.timedelta(days=1)

#: File names of a root persisted by :func:`simulated_root_save`.
ROOT_KEY_FILE = "root_key.pem"
ROOT_CERT_FILE = "root_cert.pem"

USER_DATA_VERSION = 1

_REQUIRED_FIELDS = frozenset(
    {"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"}
)
_OPTIONAL_FIELDS = frozenset({"public_key", "user_data", "nonce"})
_COSE_DEPTH = 2
_PAYLOAD_DEPTH = 3


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class SimulatedRoot:
    """A local certificate authority standing in for the AWS Nitro root.

    Attributes
    ----------
    key : EllipticCurvePrivateKey
        P-384 key; only the enclave process should hold it.
    certificate : x509.Certificate
        Self-signed, subject marked ``OU=SIMULATED``. Clients trust its DER.
    """

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def certificate_der(self) -> bytes:
        """DER bytes of the root certificate, as clients pass in ``trusted_roots``."""
        return self.certificate.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class SigningIdentity:
    """Leaf key and certificate that sign one enclave's documents.

    Attributes
    ----------
    key : EllipticCurvePrivateKey
    certificate : x509.Certificate
    cabundle : tuple of x509.Certificate
        Issuing chain, root first, as Nitro orders it.
    """

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate
    cabundle: tuple[x509.Certificate, ...]

    def expires_within(self, delta: dt.timedelta, *, now: dt.datetime | None = None) -> bool:
        """Whether the leaf certificate expires within ``delta`` of ``now``."""
        return self.certificate.not_valid_after_utc <= _utc(now) + delta


@dataclass(frozen=True)
class AttestedEnclave:
    """What a verified attestation document proves about an enclave.

    Attributes
    ----------
    public_key : bytes
        Raw X25519 HPKE key to seal requests to.
    model_sha256 : bytes
        SHA-256 of the approved model file the enclave measured (PCR16).
    code_measurement : bytes
        PCR0, SHA-384 of the enclave code.
    module_id : str
    simulated : bool
        True when the chain or document is marked SIMULATED.
    n_features : int
        Features the attested model takes.
    timestamp : datetime
        When the document was signed (UTC).
    """

    public_key: bytes
    model_sha256: bytes
    code_measurement: bytes
    module_id: str
    simulated: bool
    n_features: int
    timestamp: dt.datetime


# --------------------------------------------------------------------------- measurements


def model_pcr(model_sha256: bytes) -> bytes:
    """PCR16 value of an enclave serving a model with this SHA-256.

    Nitro's extend operation from an all-zero register:
    ``SHA-384(48 zero bytes || model_sha256)``.

    Parameters
    ----------
    model_sha256 : bytes
        32-byte SHA-256 of the model file.

    Returns
    -------
    bytes
        48 bytes.
    """
    return hashlib.sha384(bytes(PCR_BYTES) + model_sha256).digest()


def sha256_bytes(value: bytes | str) -> bytes:
    """Normalise a SHA-256 given as 32 bytes or 64 hex characters.

    Parameters
    ----------
    value : bytes or str

    Returns
    -------
    bytes
        32 bytes.

    Raises
    ------
    AttestationError
        If the value is neither.
    """
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise AttestationError("A SHA-256 must be 64 hexadecimal characters.") from None
    if not isinstance(value, bytes) or len(value) != 32:
        raise AttestationError("A SHA-256 must be 32 bytes or 64 hexadecimal characters.")
    return value


# --------------------------------------------------------------------------- simulated PKI


def simulated_root_create(
    *, common_name: str = "tre-audit SIMULATED enclave root", now: dt.datetime | None = None
) -> SimulatedRoot:
    """Create a local, self-signed root marked SIMULATED.

    Parameters
    ----------
    common_name : str
        Subject CN; the subject always carries ``OU=SIMULATED`` as well.
    now : datetime, optional
        Start of validity; defaults to the current time.

    Returns
    -------
    SimulatedRoot
    """
    key = ec.generate_private_key(ec.SECP384R1())
    name = _simulated_name(common_name)
    certificate = _certificate_build(
        subject=name,
        issuer=name,
        public_key=key.public_key(),
        signing_key=key,
        ca=True,
        start=_utc(now),
        validity=ROOT_VALIDITY,
    )
    return SimulatedRoot(key=key, certificate=certificate)


def signing_identity_issue(
    root: SimulatedRoot, *, module_id: str, now: dt.datetime | None = None
) -> SigningIdentity:
    """Issue a fresh leaf key and certificate for one enclave.

    Parameters
    ----------
    root : SimulatedRoot
    module_id : str
        Enclave module id, written into the leaf's CN.
    now : datetime, optional

    Returns
    -------
    SigningIdentity
        Valid for :data:`LEAF_VALIDITY`.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    certificate = _certificate_build(
        subject=_simulated_name(module_id[:64]),
        issuer=root.certificate.subject,
        public_key=key.public_key(),
        signing_key=root.key,
        ca=False,
        start=_utc(now),
        validity=LEAF_VALIDITY,
    )
    return SigningIdentity(key=key, certificate=certificate, cabundle=(root.certificate,))


def _simulated_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tre-audit"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SIMULATED_MARKER),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


#: Key usages a simulated certificate never has (KeyUsage takes all nine).
_UNUSED_KEY_USAGES = dict.fromkeys(
    ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
     "encipher_only", "decipher_only"),
    False,
)  # fmt: skip


def _certificate_build(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    start: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **_UNUSED_KEY_USAGES
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(signing_key, hashes.SHA384())


def simulated_root_save(root: SimulatedRoot, directory: str | os.PathLike) -> Path:
    """Write a root's key (mode 0600) and certificate (0644) to a directory.

    Parameters
    ----------
    root : SimulatedRoot
    directory : path
        Created, or narrowed, to mode 0700: only its owner may list or read
        it. Existing files are not replaced.

    Returns
    -------
    Path
        The certificate file, to hand to clients out of band.

    Raises
    ------
    FileExistsError
        If the directory already holds a root.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key_pem = root.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _file_create(directory / ROOT_KEY_FILE, key_pem, mode=0o600)
    cert_pem = root.certificate.public_bytes(serialization.Encoding.PEM)
    return _file_create(directory / ROOT_CERT_FILE, cert_pem, mode=0o644)


def _file_create(path: Path, data: bytes, *, mode: int) -> Path:
    # O_EXCL: never overwrite, and the file is born with its final mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
    return path


def simulated_root_load(directory: str | os.PathLike) -> SimulatedRoot:
    """Read a root written by :func:`simulated_root_save`.

    Parameters
    ----------
    directory : path

    Returns
    -------
    SimulatedRoot

    Raises
    ------
    AttestationError
        If the directory or the key file is open to group or others, or the
        key does not belong to the certificate.
    FileNotFoundError
        If either file is missing.
    """
    key_path = Path(directory) / ROOT_KEY_FILE
    if Path(directory).stat().st_mode & 0o077:
        raise AttestationError(f"The root directory {directory} must be private: chmod 700 it.")
    if key_path.stat().st_mode & 0o077:
        raise AttestationError(f"The root key file {key_path} must be private: chmod 600 it.")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate((Path(directory) / ROOT_CERT_FILE).read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
        certificate.public_key()
    ):
        raise AttestationError("The root key does not belong to the root certificate.")
    return SimulatedRoot(key=key, certificate=certificate)


# --------------------------------------------------------------------------- COSE_Sign1


def cose_sign1_encode(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign a payload as an untagged ES384 ``COSE_Sign1``, as Nitro emits it.

    Parameters
    ----------
    payload : bytes
    key : EllipticCurvePrivateKey
        P-384 signing key.

    Returns
    -------
    bytes
        CBOR array ``[protected, {}, payload, r || s]``.
    """
    der = key.sign(_sig_structure(PROTECTED_HEADER, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(ES384_COORDINATE_BYTES, "big") + s.to_bytes(
        ES384_COORDINATE_BYTES, "big"
    )
    return cbor2.dumps([PROTECTED_HEADER, {}, payload, signature])


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 4.4: no external AAD.
    return cbor2.dumps([SIGNATURE_CONTEXT, protected, b"", payload])


def _cose_sign1_decode(document: Any) -> tuple[bytes, bytes, bytes]:
    if not isinstance(document, bytes) or not 0 < len(document) <= MAX_DOCUMENT_BYTES:
        raise AttestationError(f"An attestation document is 1 to {MAX_DOCUMENT_BYTES} bytes.")
    cose = cbor_loads_strict(
        document, max_depth=_COSE_DEPTH, what="attestation document", error=AttestationError
    )
    if isinstance(cose, cbor2.CBORTag) and cose.tag == COSE_SIGN1_TAG:
        cose = cose.value
    if not (isinstance(cose, list | tuple) and len(cose) == 4):
        raise AttestationError("The attestation document is not a COSE_Sign1 structure.")
    protected, unprotected, payload, signature = cose
    if protected != PROTECTED_HEADER or not isinstance(unprotected, Mapping):
        raise AttestationError("The attestation document is not signed with ES384 (COSE alg -35).")
    if not isinstance(payload, bytes) or not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
        raise AttestationError("The attestation document's payload is missing or too large.")
    if not isinstance(signature, bytes) or len(signature) != 2 * ES384_COORDINATE_BYTES:
        raise AttestationError("The attestation document's signature is not an ES384 signature.")
    return protected, payload, signature


def _signature_check(
    certificate: x509.Certificate, protected: bytes, payload: bytes, signature: bytes
) -> None:
    r = int.from_bytes(signature[:ES384_COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[ES384_COORDINATE_BYTES:], "big")
    try:
        certificate.public_key().verify(
            encode_dss_signature(r, s),
            _sig_structure(protected, payload),
            ec.ECDSA(hashes.SHA384()),
        )
    except InvalidSignature:
        raise AttestationError(
            "The attestation document's signature does not verify with its certificate."
        ) from None


# --------------------------------------------------------------------------- building


def attestation_document_build(
    *,
    identity: SigningIdentity,
    module_id: str,
    public_key: bytes,
    nonce: bytes,
    code_measurement: bytes,
    model_sha256: bytes,
    n_features: int,
    now: dt.datetime | None = None,
) -> bytes:
    """Build and sign one attestation document.

    Parameters
    ----------
    identity : SigningIdentity
        Leaf key, certificate and chain.
    module_id : str
    public_key : bytes
        Enclave's raw X25519 HPKE public key.
    nonce : bytes
        The client's nonce, at most :data:`MAX_NONCE_BYTES`.
    code_measurement : bytes
        48-byte SHA-384 of the enclave code (PCR0).
    model_sha256 : bytes
        32-byte SHA-256 of the model file (extended into PCR16).
    n_features : int
    now : datetime, optional
        Signing time; defaults to the current time.

    Returns
    -------
    bytes
        The ``COSE_Sign1`` document.
    """
    user_data = cbor2.dumps(
        {
            "version": USER_DATA_VERSION,
            "model_sha256": model_sha256,
            "n_features": n_features,
            "simulated": _chain_is_simulated([identity.certificate, *identity.cabundle]),
        }
    )
    payload = {
        "module_id": module_id,
        "digest": DIGEST,
        "timestamp": int(_utc(now).timestamp() * 1000),
        "pcrs": {PCR_CODE: code_measurement, PCR_MODEL: model_pcr(model_sha256)},
        "certificate": identity.certificate.public_bytes(serialization.Encoding.DER),
        "cabundle": [c.public_bytes(serialization.Encoding.DER) for c in identity.cabundle],
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }
    return cose_sign1_encode(cbor2.dumps(payload), identity.key)


def module_id_new() -> str:
    """A fresh module id, marked simulated, shaped like Nitro's ``i-…-enc…``."""
    return f"{MODULE_ID_PREFIX}tre-audit-enc{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- verification


def attestation_verify(
    document: bytes,
    *,
    expected_model_sha256: bytes | str,
    nonce: bytes,
    trusted_roots: Iterable[bytes | x509.Certificate],
    accept_simulated: bool = False,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    expected_code_measurement: bytes | None = None,
    now: dt.datetime | None = None,
) -> AttestedEnclave:
    """Verify an enclave's attestation document before sending it any data.

    Checks, in order: the COSE_Sign1 and payload shape (Nitro's rules), the
    certificate chain up to one of ``trusted_roots`` at ``now``, the ES384
    signature, the SIMULATED marking, the model measurement, the code
    measurement if given, the nonce, and the document's age.

    Parameters
    ----------
    document : bytes
        The ``COSE_Sign1`` bytes from the enclave.
    expected_model_sha256 : bytes or str
        SHA-256 of the approved model file (32 bytes or 64 hex characters).
    nonce : bytes
        The fresh nonce this client sent, at least :data:`MIN_NONCE_BYTES`.
    trusted_roots : iterable of bytes or Certificate
        Root certificates (DER or PEM bytes) obtained out of band. The
        document's ``cabundle[0]`` must be one of them, byte for byte.
    accept_simulated : bool, default=False
        Accept a chain or document marked SIMULATED. Only for protocol
        development: a simulated enclave's host can read its memory.
    max_age_seconds : float, default=300
        Oldest acceptable document.
    expected_code_measurement : bytes, optional
        48-byte PCR0 to pin the enclave code version.
    now : datetime, optional
        Verification time; defaults to the current time.

    Returns
    -------
    AttestedEnclave

    Raises
    ------
    AttestationError
        With one sentence naming the first check that failed.
    """
    at = _utc(now)
    model_sha256 = sha256_bytes(expected_model_sha256)
    trusted = _trusted_ders(trusted_roots)
    if not isinstance(nonce, bytes) or len(nonce) < MIN_NONCE_BYTES:
        raise AttestationError(f"The client's nonce must be at least {MIN_NONCE_BYTES} bytes.")
    protected, payload_bytes, signature = _cose_sign1_decode(document)
    payload = _payload_decode(payload_bytes)
    chain = _chain_verify(payload, trusted, at=at)
    _signature_check(chain[0], protected, payload_bytes, signature)
    user_data = _user_data_decode(payload)
    simulated = _document_is_simulated(chain, payload, user_data)
    if simulated and not accept_simulated:
        raise AttestationError(
            "The enclave's attestation is signed by a SIMULATED root with no hardware "
            "isolation; it is accepted only when simulation is explicitly allowed."
        )
    _measurements_check(payload, user_data, model_sha256, expected_code_measurement)
    _nonce_check(payload, nonce)
    _freshness_check(payload["timestamp"], at=at, max_age_seconds=max_age_seconds)
    return _attested(payload, user_data, model_sha256=model_sha256, simulated=simulated)


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _payload_decode(payload_bytes: bytes) -> dict:
    payload = cbor_loads_strict(
        payload_bytes, max_depth=_PAYLOAD_DEPTH, what="attestation payload", error=AttestationError
    )
    if not isinstance(payload, dict):
        raise AttestationError("The attestation payload is not a CBOR map.")
    missing = _REQUIRED_FIELDS - payload.keys()
    if missing:
        raise AttestationError(f"The attestation payload lacks the field {sorted(missing)[0]}.")
    unknown = payload.keys() - _REQUIRED_FIELDS - _OPTIONAL_FIELDS
    if unknown:
        raise AttestationError("The attestation payload holds fields Nitro does not define.")
    for name, value in payload.items():
        if not _FIELD_CHECKS[name](value):
            raise AttestationError(f"The attestation payload's {name} has the wrong type or size.")
    return payload


def _is_bytes(value: Any, low: int, high: int) -> bool:
    return isinstance(value, bytes) and low <= len(value) <= high


def _is_pcrs(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and 1 <= len(value) <= MAX_PCRS
        and all(type(k) is int and 0 <= k < MAX_PCRS for k in value)
        and all(isinstance(v, bytes) and len(v) in (32, 48, 64) for v in value.values())
    )


def _is_cabundle(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 1 <= len(value) <= MAX_CABUNDLE
        and all(_is_bytes(cert, 1, MAX_CERT_BYTES) for cert in value)
    )


_FIELD_CHECKS = {
    "module_id": lambda v: isinstance(v, str) and 0 < len(v) <= 256,
    "digest": lambda v: v == DIGEST,
    "timestamp": lambda v: type(v) is int and 0 < v < 2**64,
    "pcrs": _is_pcrs,
    "certificate": lambda v: _is_bytes(v, 1, MAX_CERT_BYTES),
    "cabundle": _is_cabundle,
    "public_key": lambda v: _is_bytes(v, 1, MAX_PUBLIC_KEY_BYTES),
    "user_data": lambda v: _is_bytes(v, 0, MAX_USER_DATA_BYTES),
    "nonce": lambda v: _is_bytes(v, 0, MAX_NONCE_BYTES),
}


def _trusted_ders(trusted_roots: Iterable[bytes | x509.Certificate]) -> frozenset[bytes]:
    ders = frozenset(_certificate_der(root) for root in trusted_roots)
    if not ders:
        raise AttestationError("No trusted root was given, so no enclave can be trusted.")
    return ders


def _certificate_der(root: bytes | x509.Certificate) -> bytes:
    if isinstance(root, x509.Certificate):
        return root.public_bytes(serialization.Encoding.DER)
    try:
        if root.lstrip().startswith(b"-----BEGIN"):
            root = x509.load_pem_x509_certificate(root)
        else:
            root = x509.load_der_x509_certificate(root)
    except (ValueError, TypeError, AttributeError):
        raise AttestationError("A trusted root is not a PEM or DER certificate.") from None
    return root.public_bytes(serialization.Encoding.DER)


def _chain_verify(payload: dict, trusted: frozenset[bytes], *, at: dt.datetime) -> list:
    if payload["cabundle"][0] not in trusted:
        raise AttestationError("The attestation chain does not lead to a trusted root.")
    try:
        leaf = x509.load_der_x509_certificate(payload["certificate"])
        bundle = [x509.load_der_x509_certificate(der) for der in payload["cabundle"]]
    except ValueError:
        raise AttestationError(
            "The attestation chain holds a certificate that is not DER."
        ) from None
    chain = [leaf, *reversed(bundle)]
    for child, issuer in zip(chain, chain[1:], strict=False):
        _issued_by_check(child, issuer)
    for certificate in chain:
        _validity_check(certificate, at=at)
    if not isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) or not isinstance(
        leaf.public_key().curve, ec.SECP384R1
    ):
        raise AttestationError("The attestation leaf certificate does not hold a P-384 key.")
    return chain


def _issued_by_check(child: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        child.verify_directly_issued_by(issuer)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        constraints = None
    if constraints is None or not constraints.ca:
        raise AttestationError(
            "The attestation chain is broken: a certificate is not signed by the CA above it."
        )


def _validity_check(certificate: x509.Certificate, *, at: dt.datetime) -> None:
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise AttestationError(
            "A certificate in the attestation chain is expired or not yet valid."
        )


def _user_data_decode(payload: dict) -> dict:
    user_data = cbor_loads_strict(
        payload.get("user_data", b""),
        max_depth=1,
        what="attestation user data",
        error=AttestationError,
    )
    if not (
        isinstance(user_data, dict)
        and user_data.get("version") == USER_DATA_VERSION
        and type(user_data.get("n_features")) is int
        and user_data["n_features"] >= 1
        and isinstance(user_data.get("simulated"), bool)
        and _is_bytes(user_data.get("model_sha256"), 32, 32)
    ):
        raise AttestationError("The attestation user data is not a tre-audit enclave record.")
    return user_data


def _chain_is_simulated(chain: Iterable[x509.Certificate]) -> bool:
    return any(
        attribute.value == SIMULATED_MARKER
        for certificate in chain
        for attribute in certificate.subject.get_attributes_for_oid(
            NameOID.ORGANIZATIONAL_UNIT_NAME
        )
    )


def _document_is_simulated(chain: list, payload: dict, user_data: dict) -> bool:
    return (
        _chain_is_simulated(chain)
        or payload["module_id"].startswith(MODULE_ID_PREFIX)
        or user_data["simulated"]
    )


def _measurements_check(
    payload: dict, user_data: dict, model_sha256: bytes, expected_code: bytes | None
) -> None:
    measured = payload["pcrs"].get(PCR_MODEL)
    if measured is None or not hmac.compare_digest(measured, model_pcr(model_sha256)):
        raise AttestationError(
            f"The enclave serves the model with SHA-256 {user_data['model_sha256'].hex()[:16]}…, "
            f"not the approved model {model_sha256.hex()[:16]}…."
        )
    code = payload["pcrs"].get(PCR_CODE)
    if code is None or len(code) != PCR_BYTES:
        raise AttestationError("The attestation document has no measurement of the enclave code.")
    if expected_code is not None and not hmac.compare_digest(code, expected_code):
        raise AttestationError("The enclave runs different code than the pinned measurement.")


def _nonce_check(payload: dict, nonce: bytes) -> None:
    if not hmac.compare_digest(payload.get("nonce", b""), nonce):
        raise AttestationError(
            "The attestation document answers another nonce: it is a replay or a stale document."
        )


def _freshness_check(timestamp_ms: int, *, at: dt.datetime, max_age_seconds: float) -> None:
    age_ms = int(at.timestamp() * 1000) - timestamp_ms
    if age_ms > max_age_seconds * 1000:
        raise AttestationError(
            f"The attestation document is {age_ms // 1000} s old, older than {max_age_seconds} s."
        )
    if age_ms < -CLOCK_SKEW_SECONDS * 1000:
        raise AttestationError("The attestation document is dated in the future; check the clocks.")


def _attested(
    payload: dict, user_data: dict, *, model_sha256: bytes, simulated: bool
) -> AttestedEnclave:
    if "public_key" not in payload:
        raise AttestationError("The attestation document carries no enclave public key.")
    return AttestedEnclave(
        public_key=payload["public_key"],
        model_sha256=model_sha256,
        code_measurement=payload["pcrs"][PCR_CODE],
        module_id=payload["module_id"],
        simulated=simulated,
        n_features=user_data["n_features"],
        timestamp=dt.datetime.fromtimestamp(payload["timestamp"] / 1000, tz=dt.UTC),
    )
