"""Writes the synthetic motion dataset of `ezclip_jax.synthetic` (classes that differ only in temporal order).

  python -m data.synthetic /tmp/motion --videos_per_class 4 --videos

writes 4 videos per class as frame folders and lists (and, with `--videos`, as mp4 files)
in the layout that `ezclip_jax.synthetic` describes.
"""

import argparse

# Re-exported: scripts and tests written against `data.synthetic` keep working.
from ezclip_jax.synthetic import CLASSES, FPS, GOP_SIZE, make_dataset, write_video  # pylint: disable=unused-import


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("root")
  parser.add_argument("--videos_per_class", type=int, default=4)
  parser.add_argument("--num_frames", type=int, default=16)
  parser.add_argument("--height", type=int, default=64)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--videos", action="store_true", help="also write mp4 files")
  args = parser.parse_args()
  dataset = make_dataset(args.root, videos_per_class=args.videos_per_class, num_frames=args.num_frames,
                         height=args.height, width=args.width, seed=args.seed, videos=args.videos)
  print(f"Wrote {len(dataset.class_names)} classes x {args.videos_per_class} videos under {dataset.root}")


if __name__ == "__main__":
  main()
