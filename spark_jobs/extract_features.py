"""spark-submit spark_jobs/extract_features.py --images URI --features URI --rejects URI
   --batch-id ID --weights SRC [--image-size 224] [--batch-size N]

Entrypoint only: the work is in fruits_jobs/features.py (shipped with --py-files on EMR).
"""

import sys

# fruits_jobs comes from beside this file (a source tree: Python puts the script's folder first on
# sys.path), from the --py-files zip (EMR), or from the installed package (make install).
if __name__ == "__main__":
    from fruits_jobs.common import run_main
    from fruits_jobs.features import main

    sys.exit(run_main(main))
