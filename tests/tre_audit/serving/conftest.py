import tempfile
from pathlib import Path

import pytest
import skops.io
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@pytest.fixture(scope="session")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def linear_model_bytes(cancer):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*cancer)
    return skops.io.dumps(model), model


@pytest.fixture
def enclave_dirs(settings):
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # Unix socket paths are short
        settings.TRE_AUDIT_ENCLAVE_SOCKETS = Path(short) / "s"
        settings.TRE_AUDIT_ENCLAVE_ROOT = Path(short) / "root"
        yield settings


@pytest.fixture
def mpc_var(settings, tmp_path):
    """MPC endpoints' folders under the test's own var/, their hosts (a dealer of their
    own, not a shared one) on the loopback."""
    settings.VAR_DIR = tmp_path / "var"
    settings.TRE_AUDIT_MPC_DEALER = ""
    settings.TRE_AUDIT_MPC_HOST = "127.0.0.1"
    return settings
