import datetime as dt
import hashlib
import os

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secure_compute.attestation import (
    PCR_CODE,
    PCR_MODEL,
    ROOT_KEY_FILE,
    SigningIdentity,
    attestation_document_build,
    attestation_verify,
    cose_sign1_encode,
    model_pcr,
    signing_identity_issue,
    simulated_root_create,
    simulated_root_load,
    simulated_root_save,
)
from secure_compute.exceptions import AttestationError

MODEL_SHA = hashlib.sha256(b"approved model file").digest()
CODE = hashlib.sha384(b"enclave code").digest()
NONCE = bytes(range(32))
ENCLAVE_KEY = bytes(range(100, 132))
#: The clock of every check here: a fixed instant, never the wall clock, so a test
#: reached long after collection (a loaded machine) sees the same certificates.
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def root():
    """A root made at ``NOW`` (the session's root is made whenever it is first needed)."""
    return simulated_root_create(now=NOW)


@pytest.fixture(scope="module")
def identity(root):
    return signing_identity_issue(root, module_id="SIMULATED-test-enclave", now=NOW)


def build(
    identity, *, nonce=NONCE, model_sha256=MODEL_SHA, module_id="SIMULATED-test-enclave", now=NOW
):
    return attestation_document_build(
        identity=identity,
        module_id=module_id,
        public_key=ENCLAVE_KEY,
        nonce=nonce,
        code_measurement=CODE,
        model_sha256=model_sha256,
        n_features=30,
        now=now,
    )


def verify(document, root, **overrides):
    arguments = {
        "expected_model_sha256": MODEL_SHA,
        "nonce": NONCE,
        "trusted_roots": [root.certificate_der],
        "accept_simulated": True,
        "now": NOW + dt.timedelta(seconds=5),
    }
    return attestation_verify(document, **(arguments | overrides))


def refused(document, root, match, **overrides):
    with pytest.raises(AttestationError, match=match):
        verify(document, root, **overrides)


def resigned(identity, payload):
    return cose_sign1_encode(cbor2.dumps(payload), identity.key)


def payload_of(document):
    return cbor2.loads(cbor2.loads(document)[2])


# --------------------------------------------------------------------------- accepted


def test_good_document_verifies_when_simulation_is_allowed(root, identity):
    attested = verify(build(identity), root)
    assert attested.public_key == ENCLAVE_KEY
    assert attested.model_sha256 == MODEL_SHA
    assert attested.code_measurement == CODE
    assert attested.module_id == "SIMULATED-test-enclave"
    assert attested.simulated is True
    assert attested.n_features == 30
    assert attested.timestamp == NOW


def test_document_has_nitro_shape(identity):
    cose = cbor2.loads(build(identity))
    protected, unprotected, payload_bytes, signature = cose
    assert cbor2.loads(protected) == {1: -35} and unprotected == {} and len(signature) == 96
    payload = cbor2.loads(payload_bytes)
    assert set(payload) == {
        "module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
        "public_key", "user_data", "nonce",
    }  # fmt: skip
    assert payload["digest"] == "SHA384"
    assert payload["pcrs"] == {PCR_CODE: CODE, PCR_MODEL: model_pcr(MODEL_SHA)}
    assert payload["pcrs"][PCR_MODEL] == hashlib.sha384(bytes(48) + MODEL_SHA).digest()
    assert payload["cabundle"][0] == identity.cabundle[0].public_bytes(serialization.Encoding.DER)


def test_trusted_root_may_be_given_as_pem_or_certificate(root, identity):
    pem = root.certificate.public_bytes(serialization.Encoding.PEM)
    assert verify(build(identity), root, trusted_roots=[pem]).simulated
    assert verify(build(identity), root, trusted_roots=[root.certificate]).simulated


def test_model_hash_may_be_given_as_hex(root, identity):
    assert verify(build(identity), root, expected_model_sha256=MODEL_SHA.hex()).model_sha256


def test_tagged_cose_sign1_is_accepted(root, identity):
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(build(identity))))
    assert verify(tagged, root).module_id == "SIMULATED-test-enclave"


def test_unmarked_hardware_root_is_accepted_without_the_simulation_flag():
    hardware = _hardware_identity()
    document = build(hardware, module_id="i-0123456789abcdef0-enc0123456789abcdef")
    attested = attestation_verify(
        document,
        expected_model_sha256=MODEL_SHA,
        nonce=NONCE,
        trusted_roots=[hardware.cabundle[0]],
        now=NOW,
    )
    assert attested.simulated is False


def test_pinned_code_measurement(root, identity):
    assert verify(build(identity), root, expected_code_measurement=CODE)
    refused(build(identity), root, "different code", expected_code_measurement=bytes(48))


# --------------------------------------------------------------------------- refused


def test_simulated_root_is_refused_by_default(root, identity):
    refused(build(identity), root, "SIMULATED", accept_simulated=False)


def test_wrong_model_hash_is_refused(root, identity):
    other = hashlib.sha256(b"another model").hexdigest()
    refused(build(identity), root, "not the approved model", expected_model_sha256=other)


def test_stale_nonce_is_refused(root, identity):
    earlier = build(identity, nonce=b"an earlier request's nonce....")
    refused(earlier, root, "another nonce")


def test_wrong_nonce_is_refused(root, identity):
    refused(build(identity), root, "another nonce", nonce=os.urandom(32))


def test_short_client_nonce_is_refused(root, identity):
    refused(build(identity), root, "at least 16 bytes", nonce=b"short")


def test_old_timestamp_is_refused(root, identity):
    refused(build(identity), root, "old", now=NOW + dt.timedelta(seconds=301))


def test_max_age_is_configurable(root, identity):
    later = NOW + dt.timedelta(seconds=20)
    refused(build(identity), root, "old", now=later, max_age_seconds=10)


def test_future_timestamp_is_refused(root, identity):
    ahead = build(identity, now=NOW + dt.timedelta(minutes=5))
    refused(ahead, root, "future")


def test_flipped_signature_byte_is_refused(root, identity):
    protected, unprotected, payload, signature = cbor2.loads(build(identity))
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    forged = cbor2.dumps([protected, unprotected, payload, flipped])
    refused(forged, root, "signature does not verify")


def test_altered_payload_is_refused(root, identity):
    protected, unprotected, payload, signature = cbor2.loads(build(identity))
    altered = cbor2.loads(payload) | {"public_key": bytes(32)}
    forged = cbor2.dumps([protected, unprotected, cbor2.dumps(altered), signature])
    refused(forged, root, "signature does not verify")


@pytest.mark.parametrize("position", [0.2, 0.4, 0.6, 0.8, 0.97])
def test_flipped_payload_byte_is_refused(root, identity, position):
    protected, unprotected, payload, signature = cbor2.loads(build(identity))
    at = int(len(payload) * position)
    flipped = payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1 :]
    forged = cbor2.dumps([protected, unprotected, flipped, signature])
    with pytest.raises(AttestationError):
        verify(forged, root)


def test_untrusted_root_is_refused(root, identity):
    other_root = simulated_root_create(now=NOW)
    refused(build(identity), root, "trusted root", trusted_roots=[other_root.certificate_der])


def test_impostor_root_with_the_same_name_is_refused(root):
    impostor = simulated_root_create(now=NOW)  # same subject as the real root
    forged = build(signing_identity_issue(impostor, module_id="SIMULATED-x", now=NOW))
    refused(forged, root, "trusted root")


def test_leaf_signed_by_another_root_under_the_real_bundle_is_refused(root):
    impostor = simulated_root_create(now=NOW)
    leaf = signing_identity_issue(impostor, module_id="SIMULATED-x", now=NOW)
    forged = build(
        SigningIdentity(key=leaf.key, certificate=leaf.certificate, cabundle=(root.certificate,))
    )
    refused(forged, root, "chain is broken")


def test_expired_leaf_is_refused(root, identity):
    two_days = NOW + dt.timedelta(days=2)
    refused(build(identity), root, "expired", now=two_days, max_age_seconds=10**7)


def test_no_trusted_root_refuses_everything(root, identity):
    refused(build(identity), root, "No trusted root", trusted_roots=[])


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"\x00",
        b"\xff\xff\xff",
        cbor2.dumps({"not": "cose"}),
        cbor2.dumps([b"", {}, b"", b""]),
        cbor2.dumps(["text", {}, b"payload", bytes(96)]),
        b"\x84" + b"\x81" * 5000,
        bytes(40_000),
    ],
    ids=["empty", "zero", "garbage", "map", "empty-parts", "text-header", "deep", "huge"],
)
def test_malformed_documents_are_refused(root, document):
    with pytest.raises(AttestationError):
        verify(document, root)


def test_trailing_bytes_are_refused(root, identity):
    refused(build(identity) + b"\x00", root, "after its CBOR value")


def test_other_cose_algorithm_is_refused(root, identity):
    _, unprotected, payload, signature = cbor2.loads(build(identity))
    es256 = cbor2.dumps({1: -7})
    refused(cbor2.dumps([es256, unprotected, payload, signature]), root, "ES384")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"digest": "SHA256"}, "digest"),
        ({"pcrs": {0: b"short"}}, "pcrs"),
        ({"pcrs": {40: bytes(48)}}, "pcrs"),
        ({"nonce": bytes(600)}, "nonce"),
        ({"timestamp": -1}, "timestamp"),
        ({"module_id": ""}, "module_id"),
        ({"extra": 1}, "fields Nitro does not define"),
        ({"user_data": b"not cbor \xff"}, "user data"),
    ],
)
def test_payload_breaking_nitro_rules_is_refused_even_if_signed(root, identity, change, match):
    refused(resigned(identity, payload_of(build(identity)) | change), root, match)


def test_missing_field_is_refused_even_if_signed(root, identity):
    payload = payload_of(build(identity))
    del payload["pcrs"]
    refused(resigned(identity, payload), root, "lacks the field pcrs")


def test_missing_model_measurement_is_refused(root, identity):
    payload = payload_of(build(identity))
    payload["pcrs"] = {PCR_CODE: CODE}
    refused(resigned(identity, payload), root, "not the approved model")


# --------------------------------------------------------------------------- root files


def test_root_is_saved_with_a_private_key_file_and_loads_back(root, tmp_path):
    certificate_path = simulated_root_save(root, tmp_path / "root")
    assert os.stat(tmp_path / "root" / ROOT_KEY_FILE).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "root").st_mode & 0o777 == 0o700
    assert x509.load_pem_x509_certificate(certificate_path.read_bytes()) == root.certificate
    assert simulated_root_load(tmp_path / "root").certificate == root.certificate


def test_saving_never_overwrites_a_root(root, tmp_path):
    simulated_root_save(root, tmp_path)
    with pytest.raises(FileExistsError):
        simulated_root_save(simulated_root_create(now=NOW), tmp_path)


def test_readable_root_key_is_refused(root, tmp_path):
    simulated_root_save(root, tmp_path)
    os.chmod(tmp_path / ROOT_KEY_FILE, 0o644)
    with pytest.raises(AttestationError, match="chmod 600"):
        simulated_root_load(tmp_path)


def test_an_open_root_directory_is_refused_and_saving_narrows_it(root, tmp_path):
    directory = tmp_path / "root"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    simulated_root_save(root, directory)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    os.chmod(directory, 0o750)
    with pytest.raises(AttestationError, match="chmod 700"):
        simulated_root_load(directory)


def test_root_marks_itself_simulated(root):
    units = root.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [unit.value for unit in units] == ["SIMULATED"]
    assert root.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


# --------------------------------------------------------------------------- helpers


def _hardware_identity() -> SigningIdentity:
    """A root and leaf without the SIMULATED mark, standing in for AWS's."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aws.nitro-enclaves")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i-0123456789abcdef0")])
    root_cert = _certificate(root_name, root_name, root_key.public_key(), root_key, ca=True)
    leaf_cert = _certificate(leaf_name, root_name, leaf_key.public_key(), root_key, ca=False)
    return SigningIdentity(key=leaf_key, certificate=leaf_cert, cabundle=(root_cert,))


def _certificate(subject, issuer, public_key, signing_key, *, ca):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(hours=3))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA384())
    )
