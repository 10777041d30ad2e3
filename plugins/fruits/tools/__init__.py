"""Command-line tools: the `fruits` console script, demo photos and the local Airflow stack (developer tooling)."""
