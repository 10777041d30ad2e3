"""Library code of the Spark jobs (shipped to executors as a --py-files zip).

Imports nothing from Airflow: the jobs run on EMR where Airflow does not exist.
"""
