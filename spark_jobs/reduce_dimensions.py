"""spark-submit spark_jobs/reduce_dimensions.py --features URI --output URI (--k N | --variance 0.95)

Entrypoint only: the work is in fruits_jobs/pca.py (shipped with --py-files on EMR).
"""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "fruits_jobs")):  # run from the source tree
        sys.path.insert(0, here)
    from fruits_jobs.common import run_main
    from fruits_jobs.pca import main

    sys.exit(run_main(main))
