"""Test override: the same settings, with an isolated var directory per session."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HEALING_VAR_DIR", tempfile.mkdtemp(prefix="healing-test-"))
os.environ.setdefault("HEALING_LOG_FORMAT", "plain")
os.environ.setdefault("HEALING_LOG_LEVEL", "WARNING")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, HEALING, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HEALING["GRACE_SECONDS"] = 0.0
HEALING["DEMO"] = False
HEALING["REGISTER_HOME_CACHE"] = False
# every test check takes the multi-process scan path, so that path is what the tests prove
HEALING["SCAN_PROCESSES"] = 2
HEALING["SCAN_PARALLEL_MIN_ENTRIES"] = 0
TEST_VAR_DIR = Path(VAR_DIR)

# a file, not memory: the real Celery worker of the integration tests opens the same database
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_VAR_DIR / "test-db.sqlite3")}
(TEST_VAR_DIR / "static").mkdir(parents=True, exist_ok=True)
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
