"""A second process using a store the way aicache does, for the live-store tests.

    python -m tests.live_writer ROOT SECONDS LOG PROMPT...
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from tests.aicache_client import CoreCache


def main(root: str, seconds: float, log: str, prompts: list[str]) -> None:
    cache = CoreCache(root)
    rng = random.Random(1)
    last: dict[str, str] = {}
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        prompt = rng.choice(prompts)
        if rng.random() < 0.6:
            answer = f"fresh answer {n} for {prompt}"
            last[cache.set(prompt, answer)] = answer
        else:
            cache.get(prompt)
        n += 1
    Path(log).write_text(json.dumps({"writes": last, "operations": n}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:])
