"""spark-submit spark_jobs/extract_features.py --images URI --features URI --rejects URI
   --batch-id ID --weights SRC [--image-size 224] [--batch-size N]

Entrypoint only: the work is in fruits_jobs/features.py (shipped with --py-files on EMR).
"""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "fruits_jobs")):  # run from the source tree
        sys.path.insert(0, here)
    from fruits_jobs.common import run_main
    from fruits_jobs.features import main

    sys.exit(run_main(main))
