"""spark-submit spark_jobs/reduce_dimensions.py --features URI --output URI (--k N | --variance 0.95)

Entrypoint only: the work is in fruits_jobs/pca.py (shipped with --py-files on EMR).
"""

import sys

# fruits_jobs comes from beside this file (a source tree: Python puts the script's folder first on
# sys.path), from the --py-files zip (EMR), or from the installed package (make install).
if __name__ == "__main__":
    from fruits_jobs.common import run_main
    from fruits_jobs.pca import main

    sys.exit(run_main(main))
