"""What a cluster needs to run the jobs, built reproducibly: entrypoints, --py-files zip, bootstrap.

Used by the entrypoints (to ship this package when run straight from the source tree) and by
the DAG's "stage code" task (to upload a versioned copy). Standard library only.
"""

import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import NamedTuple

from fruits_jobs.contract import FEATURES_ENTRYPOINT, PCA_ENTRYPOINT, PY_FILES_ZIP

PACKAGE_DIR = Path(__file__).resolve().parent  # the package's own sources, wherever it is installed
ZIP_NAME = PY_FILES_ZIP
ENTRYPOINTS = (FEATURES_ENTRYPOINT, PCA_ENTRYPOINT)
BOOTSTRAP = "bootstrap/emr_bootstrap.sh"
REQUIREMENTS = "requirements.txt"
LOCK = "requirements.lock"  # the whole closure the bootstrap installs (make lock)
# What a cluster needs under code/<version>/, besides the zip: what build_bundle ships.
COPIED = ENTRYPOINTS + (BOOTSTRAP, REQUIREMENTS, LOCK)
SHIPPED = (ZIP_NAME, *COPIED)
# A fixed timestamp makes the zip byte-identical for identical sources, so the version is stable.
_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)


def repo_dir() -> Path:
    """The checkout (or deployment folder) holding spark_jobs/: env FRUITS_REPO, else the source tree
    this package runs from, else the working directory. A wheel install knows no checkout of its own."""
    if os.environ.get("FRUITS_REPO"):
        return Path(os.environ["FRUITS_REPO"]).expanduser().resolve()
    source = PACKAGE_DIR.parents[1]
    return source if (source / "spark_jobs" / BOOTSTRAP).is_file() else Path.cwd().resolve()


def spark_jobs_dir() -> Path:
    """spark_jobs/ of repo_dir(): what a bundle copies besides this package (bootstrap, requirements, lock)."""
    folder = repo_dir() / "spark_jobs"
    if not (folder / BOOTSTRAP).is_file():
        raise FileNotFoundError(
            f"no spark_jobs/{BOOTSTRAP} under {folder.parent}: set FRUITS_REPO to the checkout "
            "(or deployment folder) that holds spark_jobs/"
        )
    return folder


class Bundle(NamedTuple):
    version: str  # content hash of everything shipped: a new prefix only when the code changes
    files: dict[str, Path]  # name relative to the code prefix -> local file


def _package_sources(package_dir: Path = PACKAGE_DIR):
    return sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)


def build_zip(dest: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Zip the fruits_jobs package deterministically (sorted entries, fixed timestamps)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for src in _package_sources(package_dir):
            info = zipfile.ZipInfo(str(Path(package_dir.name) / src.relative_to(package_dir)), _ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, src.read_bytes())
    return dest


def build_bundle(out_dir: Path, jobs_dir: Path | None = None) -> Bundle:
    """Copy entrypoints, bootstrap and requirements to out_dir, build the zip, hash it all."""
    jobs_dir = jobs_dir or spark_jobs_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {ZIP_NAME: build_zip(out_dir / ZIP_NAME, jobs_dir / "fruits_jobs")}
    for name in COPIED:
        dest = out_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(jobs_dir / name, dest)
        files[name] = dest
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(files[name].read_bytes())
    return Bundle(version=digest.hexdigest()[:12], files=files)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Build the jobs' code bundle into a folder.")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    bundle = build_bundle(args.out)
    print(json.dumps({"version": bundle.version, "files": {k: str(v) for k, v in bundle.files.items()}}))
