#!/usr/bin/env python3
"""The micro-benchmark goals, from criterion's last run (`bench/run micro`): the floor
(a hook that returns at once) at most 0.25 µs, each built-in filter's hook at most
1 µs. Reads target/criterion/**/new/{benchmark,estimates}.json (criterion's medians)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITERION = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "criterion")
FLOOR_GOAL_US = 0.25
HOOK_GOAL_US = 1.0


def medians():
    """{benchmark id: criterion's median in µs} for every benchmark of the last run."""
    out = {}
    for d, _, files in os.walk(CRITERION):
        if os.path.basename(d) != "new" or "benchmark.json" not in files or "estimates.json" not in files:
            continue
        try:
            bench = json.load(open(os.path.join(d, "benchmark.json")))
            est = json.load(open(os.path.join(d, "estimates.json")))
            out[bench["full_id"]] = est["median"]["point_estimate"] / 1000
        except (OSError, ValueError, KeyError) as e:
            print(f"warning: {d}: {e}", file=sys.stderr)
    return out


def main():
    m = medians()
    floors = {k: v for k, v in m.items() if k.startswith("hook/") and "(the floor)" in k}
    hooks = {k: v for k, v in m.items() if k.startswith("hook/") and k not in floors}
    if not floors and not hooks:
        print(f"no criterion results under {CRITERION}: run `bench/run micro` first", file=sys.stderr)
        return 1
    floor = min(floors.values()) if floors else None
    print("\n### Micro-benchmark goals (criterion medians, `bench/run micro`)\n")
    print("| goal | figure | met? |")
    print("|---|---|---|")
    for k, v in sorted(floors.items()):
        name = k.removeprefix("hook/").replace(" (the floor)", "")
        print(f"| the floor, {name} ≤ {FLOOR_GOAL_US} µs | {v:.2f} µs | "
              f"{'met' if v <= FLOOR_GOAL_US else 'missed'} |")
    for k, v in sorted(hooks.items()):
        own = f", {v - floor:.2f} µs less the floor" if floor is not None else ""
        print(f"| {k.removeprefix('hook/')} ≤ {HOOK_GOAL_US} µs | {v:.2f} µs{own} | "
              f"{'met' if v <= HOOK_GOAL_US else 'missed'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
