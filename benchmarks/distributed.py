"""DistributedOptimizer(Adam) against Adam: step time, allreduce overhead, bytes per step; ZeRO's memory.

    python benchmarks/distributed.py [--quick] [--ranks 1,2]

starts ``mpiexec -n R`` for each R (the mpiexec next to this Python, else on PATH)
and prints one table. float32, 1 thread per rank; workloads:

* ``1x16.8M``: one array of 16,777,216 elements (a ParameterList of one);
* ``10000x1.6K``: 10,000 arrays of 1,600 in a ParameterList (one flat buffer);
* ``10000x1.6K sep``: the same arrays as separate Parameters (packed per dtype).

In each rank, in one process and in interleaved rounds (A B C, then C B A), the
median time per step of:

* ``Adam``: ``arrayopt.Adam(params).step()`` on this rank's copy (no communication);
* ``dist``: ``DistributedOptimizer(Adam(params)).step()`` (the agreement check,
  one ``Allreduce`` per buffer, the division by R, then Adam);
* ``allreduce``: ``comm.Allreduce`` of a buffer as large as the gradients, alone.

The ranks run the same sequence, so every candidate meets the same contention; the
table shows rank 0's medians. ``bytes/step`` is what each rank handed to MPI per
step (counted by the optimizer), against the minimum: one allreduce of the gradient
buffer. ``ZeRO state/rank`` is the Adam state one rank of ``ZeroRedundancyOptimizer``
keeps, as a fraction of Adam's (the largest over the ranks).
"""

import argparse
import os
import shutil
import subprocess
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

WORKLOADS = {
    "1x16.8M": (1, 16_777_216, True),
    "10000x1.6K": (10_000, 1_600, True),
    "10000x1.6K sep": (10_000, 1_600, False),
}


def worker(quick):
    from mpi4py import MPI

    import arrayopt
    from arrayopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer

    comm = MPI.COMM_WORLD
    rounds, batch_s = (3, 0.3) if quick else (7, 1.0)
    rows = []
    for name, (count, size, flat) in WORKLOADS.items():
        rng = np.random.default_rng(0)
        arrays = [rng.normal(size=size).astype(np.float32) for _ in range(count)]
        grads = [rng.normal(size=size).astype(np.float32) for _ in range(count)]

        def build(arrays=arrays, grads=grads, flat=flat):
            if flat:
                params = arrayopt.ParameterList(arrays)
                params.flat_grad = np.concatenate(grads)
                return list(params)
            params = [arrayopt.Parameter(a.copy()) for a in arrays]
            for p, g in zip(params, grads, strict=True):
                p.grad = g.copy()
            return params

        plain = arrayopt.Adam(build(), lr=1e-3)
        dist = DistributedOptimizer(arrayopt.Adam(build(), lr=1e-3), comm=comm)
        buffer = np.concatenate(grads)

        def allreduce(buffer=buffer):
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

        candidates = {"Adam": plain.step, "dist": dist.step, "allreduce": allreduce}
        for step in candidates.values():
            step()
            step()
        channel = dist._channel
        before = channel.payload_bytes
        dist.step()
        per_step_bytes = channel.payload_bytes - before
        medians = time_candidates(comm, candidates, rounds, batch_s)
        rows.append(
            {
                "workload": name,
                "ranks": comm.size,
                **{k: v * 1e3 for k, v in medians.items()},
                "bytes": per_step_bytes,
                "minimum": buffer.nbytes,
            }
        )
        del plain, dist, candidates
    # ZeRO: the Adam state one rank keeps
    arrays = [np.ones(1_600, np.float32) for _ in range(10_000)]
    params = arrayopt.ParameterList(arrays)
    zero = ZeroRedundancyOptimizer(params, arrayopt.Adam, comm=comm, lr=1e-3)
    params.flat_grad = np.ones(16_000_000, np.float32)
    zero.step()
    mine = sum(v.nbytes for s in zero.state.values() for v in s.values() if hasattr(v, "nbytes"))
    share = max(comm.allgather(mine)) / (2 * 4 * 16_000_000)
    if comm.rank == 0:
        print("RESULT " + json.dumps({"rows": rows, "zero_share": share}), flush=True)


def time_candidates(comm, candidates, rounds, batch_s):
    per_step = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            step = candidates[name]
            n = 0
            comm.Barrier()
            start = time.perf_counter()
            while True:
                step()
                n += 1
                # every rank stops after the same number of steps (rank 0 decides)
                elapsed = comm.bcast(time.perf_counter() - start, root=0)
                if elapsed > batch_s:
                    break
            per_step[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(times) for name, times in per_step.items()}


def mpiexec():
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("mpiexec", path=path)
    if found is None:
        raise SystemExit("no mpiexec: pip install mpi4py mpich")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s per candidate")
    parser.add_argument("--ranks", default="1,2", help="comma-separated numbers of ranks")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.quick)
        return
    results = []
    for ranks in [int(r) for r in args.ranks.split(",")]:
        command = [mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker"]
        if args.quick:
            command.append("--quick")
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    print("| workload | ranks | Adam ms | dist ms | dist / Adam | overhead ms | allreduce ms | bytes/step / minimum |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            if row["ranks"] > 1:
                moved = f"{row['bytes'] / row['minimum']:.6f} ({row['bytes']:,} / {row['minimum']:,})"
            else:
                moved = f"alone: {row['bytes']} B, no allreduce"
            print(
                f"| {row['workload']} | {row['ranks']} | {row['Adam']:.1f} | {row['dist']:.1f} | "
                f"{row['dist'] / row['Adam']:.2f} | {row['dist'] - row['Adam']:.1f} | "
                f"{row['allreduce']:.1f} | {moved} |"
            )
    for ranks, result in zip(args.ranks.split(","), results, strict=True):
        print(f"ZeRO(Adam) state per rank, {ranks} ranks: {result['zero_share']:.3f} of Adam's")


if __name__ == "__main__":
    main()
