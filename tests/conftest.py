import pytest


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    """Every test stores files in its own folder; passwords hash fast (tests only)."""
    settings.TRE_AUDIT_FILE_ROOT = tmp_path / "files"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
