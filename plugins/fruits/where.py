"""Print where a batch's outputs are in the local lake: `python -m fruits.where [LAKE] [--batch-id ID]`.

Without --batch-id: the most recent batch that has PCA metrics.
"""
import argparse
import json
import sys
from pathlib import Path

from fruits import layout
from fruits.lake import default_lake
from fruits.summary import format_locations, locations


def latest_processed_batch(lake: Path):
    done = sorted(lake.glob(f"{layout.PCA}{layout.partition('*')}/{layout.PCA_METRICS_FILE}"),
                  key=lambda p: p.stat().st_mtime)
    return done[-1].parent.name[len(layout.partition("")):] if done else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", nargs="?", type=Path, default=default_lake())
    parser.add_argument("--batch-id")
    args = parser.parse_args(argv)
    lake = args.lake.resolve()
    batch_id = args.batch_id or latest_processed_batch(lake)
    if batch_id is None:
        print(f"no processed batch in {lake}", file=sys.stderr)
        return 1
    print(f"batch {batch_id} in {lake}:")
    print(format_locations(locations(f"{lake}/", batch_id)))
    metrics = lake / layout.pca_metrics_key(batch_id)
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        print(f"  k={m['k']} of {m['input_dim']} dims, explained variance {m['total_explained_variance']:.3f}"
              f" on {m['n_images']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
