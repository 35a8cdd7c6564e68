import hashlib

import pytest
import skops.io
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute.attestation import simulated_root_create, simulated_root_save


@pytest.fixture(scope="session")
def breast_cancer():
    return load_breast_cancer(return_X_y=True)


@pytest.fixture(scope="session")
def model(breast_cancer):
    X, y = breast_cancer
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:400], y[:400])


@pytest.fixture(scope="session")
def model_bytes(model):
    return skops.io.dumps(model)


@pytest.fixture(scope="session")
def model_sha256(model_bytes):
    return hashlib.sha256(model_bytes).digest()


@pytest.fixture(scope="session")
def root():
    return simulated_root_create()


@pytest.fixture(scope="session")
def root_directory(root, tmp_path_factory):
    directory = tmp_path_factory.mktemp("enclave") / "root"
    simulated_root_save(root, directory)
    return directory
