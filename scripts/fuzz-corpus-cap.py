"""Caps a fuzz corpus: keeps at most N of its files, those that reach the most coverage.

Usage: fuzz-corpus-cap.py CONTROL_FILE N

CONTROL_FILE is a libFuzzer merge control file (`-merge=1 -merge_control_file=F`) over the
corpus: the files, then one `FT index feature...` line per file. Files are chosen greedily, each
for the most features the ones before it missed (the smaller file on a tie); the others are
deleted. Prints how many features the kept files reach, of how many.
"""

import os
import sys


def main() -> None:
    control, limit = sys.argv[1], int(sys.argv[2])
    lines = open(control, encoding="utf-8").read().splitlines()
    count = int(lines[0])
    files = lines[2 : 2 + count]
    features = {f: set() for f in files}
    for line in lines[2 + count :]:
        if line.startswith("FT "):
            index, *found = line.split()[1:]
            features[files[int(index)]] = set(found)
    covered: set[str] = set()
    kept: list[str] = []
    candidates = set(files)
    while len(kept) < limit and candidates:
        best = max(
            candidates,
            key=lambda f: (len(features[f] - covered), -os.path.getsize(f), f),
        )
        if not features[best] - covered:
            break
        kept.append(best)
        candidates.discard(best)
        covered |= features[best]
    for f in candidates:
        os.remove(f)
    total = set().union(*features.values())
    print(f"{len(kept)} files reach {len(covered)} of {len(total)} features")


if __name__ == "__main__":
    main()
