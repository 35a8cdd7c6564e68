import pytest
from django.core.cache import cache

from attacks.audit import Upload
from attacks.datasets import write_famous_patient_example


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    """Every test stores files in its own folder; passwords hash fast (tests only);
    throttle counts start from zero."""
    cache.clear()
    settings.TRE_AUDIT_FILE_ROOT = tmp_path / "files"
    settings.TRE_AUDIT_ANCHOR_FILE = tmp_path / "audit-anchor.log"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def example_files(tmp_path_factory):
    """The famous-patient example (gamma=3) as the three uploads a researcher submits."""
    paths = write_famous_patient_example(tmp_path_factory.mktemp("example"), gamma=3.0)
    return {
        role: Upload(name=p.rsplit("/", 1)[1], data=open(p, "rb").read())
        for role, p in paths.items()
        if role in ("model", "train", "test")
    }
