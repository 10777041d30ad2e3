#!/usr/bin/env bash
# Downloads the S3A connector into a Spark jars folder, at image build time (both images use it:
# docker/airflow/Dockerfile for the driver, docker/spark/Dockerfile for the master/worker).
#
#   fetch-s3a-jars.sh JARS_DIR
#
# hadoop-aws must be the exact Hadoop version Spark was built with (Spark 3.5.x: Hadoop 3.3.4), and
# aws-java-sdk-bundle the exact SDK that hadoop-aws release was built against (Hadoop 3.3.4:
# 1.12.262); mixing versions fails at runtime with NoSuchMethodError / ClassNotFoundException.
# Each jar is checked against the .sha1 Maven Central publishes beside it.
set -euo pipefail

JARS_DIR="${1:?usage: fetch-s3a-jars.sh JARS_DIR}"
HADOOP_AWS_VERSION="${HADOOP_AWS_VERSION:-3.3.4}"
AWS_SDK_BUNDLE_VERSION="${AWS_SDK_BUNDLE_VERSION:-1.12.262}"
MAVEN_REPO="${MAVEN_REPO:-https://repo1.maven.org/maven2}"

fetch() {  # fetch GROUP_PATH ARTIFACT VERSION
    local url="${MAVEN_REPO}/$1/$2/$3/$2-$3.jar"
    local dest="${JARS_DIR}/$2-$3.jar"
    wget -q -O "${dest}" "${url}"
    echo "$(wget -q -O - "${url}.sha1" | cut -c1-40)  ${dest}" | sha1sum -c --quiet -
    echo "fetched ${dest}"
}

mkdir -p "${JARS_DIR}"
fetch org/apache/hadoop hadoop-aws "${HADOOP_AWS_VERSION}"
fetch com/amazonaws aws-java-sdk-bundle "${AWS_SDK_BUNDLE_VERSION}"
