#!/usr/bin/env bash
# Build the EMR Serverless workers' image (docker/emr-serverless/Dockerfile) and push it to the stack's
# ECR repository: `make serverless-image SERVERLESS_REPOSITORY=... SERVERLESS_BASE_TAG=...` calls it.
#
#   build-and-push.sh <repository URI> <base image's dated tag> <image tag>
#
# The repository is the stack's output ServerlessImageRepositoryUri; the base tag, a dated tag of
# public.ecr.aws/emr-serverless/spark/emr-7.12.0 (never `latest`: it moves); the image tag, the digest
# of the Dockerfile and the jobs' lock (fruits.backends.emr_serverless.image), which the stack's
# ServerlessImageTag then names. Needs docker (with buildx for --platform) and the AWS CLI.
set -euo pipefail

REPOSITORY="${1:-}"
BASE_TAG="${2:-}"
TAG="${3:-}"
if [ -z "$REPOSITORY" ]; then
  echo "set SERVERLESS_REPOSITORY to the stack's output ServerlessImageRepositoryUri" >&2
  exit 2
fi
if [ -z "$BASE_TAG" ] || [ "$BASE_TAG" = "latest" ]; then
  echo "set SERVERLESS_BASE_TAG to a dated tag of public.ecr.aws/emr-serverless/spark/emr-7.12.0 (not latest)" >&2
  exit 2
fi
if [ -z "$TAG" ]; then
  echo "no image tag: run it through make serverless-image" >&2
  exit 2
fi
REGISTRY="${REPOSITORY%%/*}"
REGION="$(echo "$REGISTRY" | cut -d. -f4)"  # <account>.dkr.ecr.<region>.amazonaws.com

aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
# linux/amd64: the application's X86_64 (tensorflow-cpu has no aarch64 wheel)
docker build --platform linux/amd64 --build-arg "BASE_TAG=$BASE_TAG" \
  -f docker/emr-serverless/Dockerfile -t "$REPOSITORY:$TAG" .
docker push "$REPOSITORY:$TAG"
echo "pushed $REPOSITORY:$TAG: deploy infra/aws/fruits.yaml with ServerlessImageTag=$TAG"
