"""Airflow-side code of the Fruits! pipeline: config, bucket layout, ingest, EMR builders, local runner.

Lives under plugins/ because Airflow puts that folder on sys.path for DAGs, workers and the
triggerer alike; the DAG file only wires these pieces together. Nothing here imports Spark.
"""
