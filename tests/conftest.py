"""Shared test fixtures: one local Spark session for the suite, and the optional shared data.

`../shared` (real Fruits-360 photos, genuine ImageNet weights) sits beside the checkout in CI;
tests that need it skip with a reason when it is absent, the rest still run.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Airflow puts plugins/ on sys.path by itself; tests import the same package the same way.
for p in (REPO, REPO / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SHARED = Path(os.environ.get("FRUITS_SHARED_DIR", REPO.parent / "shared"))
SAMPLE_DIR = SHARED / "data" / "fruits-360-sample"
WEIGHTS_FILE = SHARED / "models" / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real Fruits-360 sample not found at {SAMPLE_DIR} (set FRUITS_SHARED_DIR)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def weights_file() -> Path:
    if not WEIGHTS_FILE.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {WEIGHTS_FILE} (set FRUITS_SHARED_DIR)")
    return WEIGHTS_FILE
