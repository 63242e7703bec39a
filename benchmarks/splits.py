"""How much validation text has a near-copy in training, with the python source split file by file (the
reference) and with prepare.py's rule that keeps near-copies in one split; and the seconds each takes.

    uv run benchmarks/splits.py [--site-packages]
"""
import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import sources  # noqa: E402


def measure(val, train, groups_of):
    """val/train: the texts of each split; groups_of: text -> file."""
    files = {split: defaultdict(set) for split in ("val", "train")}
    for split, texts in (("val", val), ("train", train)):
        for text in texts:
            files[split][groups_of[text]] |= sources.line_hashes(text, 8)
    long_train = set().union(*(sources.line_hashes(t, 40) for t in train))
    seen = total = mostly_seen = 0
    val_long = defaultdict(set)
    for text in val:
        val_long[groups_of[text]] |= sources.line_hashes(text, 40)
    for lines in val_long.values():
        hit = len(lines & long_train)
        seen, total = seen + hit, total + len(lines)
        mostly_seen += len(lines) >= 20 and hit > 0.9 * len(lines)
    # the largest share of a validation file's lines found in ONE training file (lines in more than 200
    # files left out, as boilerplate)
    in_files = Counter(h for split in files.values() for lines in split.values() for h in lines)
    where = defaultdict(list)
    for group, lines in files["train"].items():
        for h in lines:
            if in_files[h] <= 200:
                where[h].append(group)
    copies = Counter()
    for lines in files["val"].values():
        if len(lines) >= 10:
            best = max(Counter(g for h in lines for g in where.get(h, ())).values(), default=0) / len(lines)
            copies[50] += best >= 0.5
            copies[80] += best >= 0.8
    chars = sum(map(len, val)) / (sum(map(len, val)) + sum(map(len, train)))
    return dict(files=len(files["val"]), share=chars, seen=seen / max(total, 1), mostly=mostly_seen,
                half=copies[50], most=copies[80])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--site-packages", action="store_true", help="the stdlib and site-packages, not the stdlib alone")
    args = p.parse_args()
    groups_of = {}
    for group, text in sources.python_documents(args.site_packages):
        groups_of.setdefault(text, group)  # exact copies: the first one met, as prepare keeps it
    rows = {}
    ours = sources.near_copy_roots
    for name, rule in (("file by file (reference)", lambda documents: {}), ("near-copies together (prepare.py)", ours)):
        sources.near_copy_roots = rule
        t0 = time.perf_counter()
        splits, chars, duplicates, near = sources.collect_documents("python", Path("/nonexistent"), include_site_packages=args.site_packages)
        seconds = time.perf_counter() - t0
        sources.near_copy_roots = ours
        rows[name] = dict(measure(splits["val"], splits["train"], groups_of), seconds=seconds, near=near)
    print(f"\npython source{' with site-packages' if args.site_packages else ''}, Python {sys.version.split()[0]}: "
          f"{chars / 1e6:.1f} M characters, {len(set(groups_of.values())):,} files, {duplicates:,} exact copies left out")
    print("| split | validation files | share of characters | its long lines seen in training | files with >90 % "
          "seen | files with >=50 % / >=80 % of their lines in one training file | files joined to a near-copy | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['files']:,} | {r['share']:.2%} | {r['seen']:.1%} | {r['mostly']} | {r['half']} / "
              f"{r['most']} | {r['near']:,} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
