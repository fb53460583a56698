"""Run every benchmark in turn (each prints its own markdown tables).

    python benchmarks/run_all.py [--device cuda]
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_nma.py", "bench_simulate.py", "bench_align.py", "bench_landscape.py",
           "bench_network.py", "bench_supp_table3.py", "bench_fig7.py", "bench_pseudoatoms.py",
           "bench_halfmaps.py"]

if __name__ == "__main__":
    extra = sys.argv[1:]
    for s in SCRIPTS:
        print(f"\n# {s}\n", flush=True)
        args = extra if s not in ("bench_nma.py",) else []
        subprocess.run([sys.executable, os.path.join(HERE, s)] + args, check=False)
