"""Print where a batch's outputs are in the local lake: `python -m fruits.where [LAKE] [--batch-id ID]`.

Without --batch-id: the batch whose PCA committed last.
"""
import argparse
import sys
from pathlib import Path

from fruits.lake import default_lake
from fruits.published import latest_processed_batch
from fruits.storage import LocalStorage
from fruits.summary import format_locations, read_summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", nargs="?", type=Path, default=default_lake())
    parser.add_argument("--batch-id")
    args = parser.parse_args(argv)
    storage = LocalStorage(args.lake.resolve())
    batch_id = args.batch_id or latest_processed_batch(storage)
    if batch_id is None:
        print(f"no processed batch in {storage.name}", file=sys.stderr)
        return 1
    try:
        summary = read_summary(storage, batch_id)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    pca = summary["pca"]
    print(f"batch {batch_id} in {storage.name}:")
    print(format_locations(summary["locations"]))
    print(f"  k={pca['k']} of {pca['input_dim']} dims, explained variance {pca['total_explained_variance']:.3f}"
          f" on {pca['n_images']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
