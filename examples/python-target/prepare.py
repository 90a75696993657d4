"""Makes the data (frozen): data/train.txt, data/val.txt, data/holdout.txt.

    python3 prepare.py

A fixed-seed generator of simple English-like sentences, so the example needs no download.
Your own target would instead fetch or build its data here; either way the data stays out of
git (.gitignore) and reaches the loop's worktrees through `[target] inputs`.
"""

import os
import random

SUBJECTS = ["the cat", "a dog", "my friend", "the old king", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "finds", "follows", "remembers", "calls"]
OBJECTS = ["the river", "a red apple", "the tall tree", "her brother", "the quiet town", "a song"]
ENDINGS = [".", " today.", " again.", " at night.", " in the morning."]


def sentences(rng, n_bytes):
    out = []
    size = 0
    while size < n_bytes:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}\n"
        out.append(s)
        size += len(s)
    return "".join(out)


def main():
    rng = random.Random(1234)
    os.makedirs("data", exist_ok=True)
    for name, n in [("train", 200_000), ("val", 20_000), ("holdout", 20_000)]:
        with open(f"data/{name}.txt", "w") as f:
            f.write(sentences(rng, n))
    print("wrote data/train.txt, data/val.txt, data/holdout.txt")


if __name__ == "__main__":
    main()
