"""The workers' image: its tag is the digest of what decides its content (its Dockerfile and the jobs'
lock), so `make serverless-image` pushes one tag per closure and the pre-flight can tell whether the
application runs the image of this checkout.

    python -m fruits.backends.emr_serverless.image    # prints the tag (make serverless-image uses it)
"""

import hashlib

from fruits_jobs.bundle import LOCK, repo_dir, spark_jobs_dir

DOCKERFILE = "docker/emr-serverless/Dockerfile"


def image_tag() -> str:
    digest = hashlib.sha256()
    for path in (repo_dir() / DOCKERFILE, spark_jobs_dir() / LOCK):
        digest.update(path.read_bytes())
    return f"jobs-{digest.hexdigest()[:16]}"


def tag_of(image_uri: str) -> str | None:
    """The tag of an image URI (repository[:tag][@digest]); None when it has none."""
    name = image_uri.split("@", 1)[0]
    repository, _, tag = name.rpartition(":")
    return tag if repository and "/" not in tag else None


if __name__ == "__main__":
    print(image_tag())
