"""The Fruits! pipeline's Airflow side: config/ (what a run is), lake/ (the bucket and its rules),
backends/ (where the Spark jobs run: EMR or this machine), tools/ (the `fruits` CLI and developer tools).

It lives under plugins/ because every Airflow component (scheduler, workers, triggerer, MWAA's
plugins.zip) puts that folder on sys.path; plugins/.airflowignore keeps Airflow's plugin loader
from also executing each module under its bare file name. Nothing here imports Spark.
"""
