"""Prints holds/s and server CPU per hold of every compare run next to this script, with the
ratio of holdfast-sync's CPU per hold to the no-op baseline's in the same run."""
import glob
import json
import os
import sys

os.chdir(os.path.dirname(os.path.abspath(__file__)))
print('| run | holdfast-sync holds/s | µs CPU/hold | baseline-noop holds/s | µs CPU/hold | CPU ratio |')
print('|---|---:|---:|---:|---:|---:|')
for path in sys.argv[1:] or sorted(glob.glob('*.json')):
    runs = {r['target']: r for r in json.load(open(path))['runs']}
    hf, noop = runs['holdfast-sync'], runs['baseline-noop']
    ratio = hf['cpu']['us_per_op'] / noop['cpu']['us_per_op']
    print(f"| {path[:-5]} | {hf['holds_per_sec']:.0f} | {hf['cpu']['us_per_op']:.1f} "
          f"| {noop['holds_per_sec']:.0f} | {noop['cpu']['us_per_op']:.1f} | {ratio:.2f}× |")
