#!/usr/bin/env bash
# G&C on a CUDA machine: device-consistency checks, a throughput sweep, then the benchmarks/ suite.
#   scripts/gpu_bench.sh [mini|quick|full]   (results under $OUT, or ./gpu-out)
#   mini: stream/device checks + one sweep; quick: + all sweeps; full: + pytest benchmarks/
# Needs the Fashion-MNIST IDX .gz files in $BENCHSUITE_FASHION_MNIST (default .device-data or
# .device-data/fashion-mnist), or, when the working tree is too large to carry the dataset,
# BENCHSUITE_BENCH_TASK_FILE=.device-data/task-fmnist-0v7-n16-s200.pt: the N=16 task tensors,
# written by: python -c 'import sys,torch; sys.path.insert(0,"benchmarks"); from conftest import
# load_task; x,y=load_task(); torch.save({"x_train":x,"y_train":y}, sys.argv[1])' FILE
# (mini/quick modes and benchmarks/test_bench_gnc.py need only that file).
set -uo pipefail
MODE=${1:-full}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -z "${BENCHSUITE_FASHION_MNIST:-}" ]; then
  if [ -e .device-data/fashion-mnist/train-images-idx3-ubyte.gz ]; then export BENCHSUITE_FASHION_MNIST=.device-data/fashion-mnist; else export BENCHSUITE_FASHION_MNIST=.device-data; fi
fi
export PYTHONPATH=${PYTHONPATH:-}:.
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
MODE=$MODE $PY - <<'PY' 2>&1 | tee "$OUT/probe.txt"
import os, sys, time, torch, numpy as np
MINI = os.environ.get("MODE") == "mini"
sys.path.insert(0, "benchmarks")
from conftest import load_task, paper_mlp
from benchsuite.engine import gnc, random as rng, triton_rng
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.records import SamplingRequest
from benchsuite.stacked import accuracy
print("torch", torch.__version__, torch.cuda.get_device_name())
dev = torch.device("cuda")
prior = {p.name: p for p in benchsuite_priors()}
# 1. the fused Triton stream equals numpy's Philox (bit for bit)
words = rng.numpy_words(2**64 - 5, 1000, 3, 8228)
ref = rng.odd_integers(torch.from_numpy(words.view(np.int64))).float() * 2**-24
got = triton_rng.uniform_rows(2**64 - 5, 1000, 3, 8228, dev).cpu()
print("triton stream == numpy stream:", torch.equal(ref, got))
tw = rng.torch_words(7, torch.arange(5, 9, device=dev), 16).cpu().numpy()
print("torch-ops stream on cuda == numpy:", np.array_equal(tw, rng.numpy_words(7, 5, 4, 16).view(np.int64)))
# 2. same candidates and decisions on CPU and CUDA (small budget)
x, y = load_task()
m = paper_mlp()
def req(device, **o):
    return SamplingRequest(m.to(device), x.to(device), y.to(device), prior["uniform"], 30, 400_000, 5, device,
                           options={"reuse_nested": False, **o})
a = gnc.guess_and_check(req(torch.device("cpu")))
b = gnc.guess_and_check(req(dev))
print("cpu found_at[:8]", a.found_at[:8].tolist(), "cuda", b.found_at[:8].tolist())
print("cpu == cuda found_at:", torch.equal(a.found_at, b.found_at), a.candidates_tried, b.candidates_tried)
acc = accuracy(m.to(dev), b.parameters, b.buffers, x.to(dev), y.to(dev))
print("cuda accepted all fit:", bool((acc == 1).all()))
def reqn(device, **o):
    return SamplingRequest(m.to(device), x.to(device), y.to(device), prior["kaiming-normal"], 10, 100_000, 5, device,
                           options={"reuse_nested": False, **o})
for fsm in (() if MINI else (True, False)):
    a = gnc.guess_and_check(reqn(torch.device("cpu"), function_space=fsm))
    b = gnc.guess_and_check(reqn(dev, function_space=fsm))
    acc = accuracy(m.to(dev), b.parameters, b.buffers, x.to(dev), y.to(dev))
    print(f"kaiming-normal function_space={fsm}: cpu == cuda found_at:", torch.equal(a.found_at, b.found_at),
          "all fit:", bool((acc == 1).all()), a.found_at[:4].tolist(), b.found_at[:4].tolist())
# 3. component timings
xd, yd = x.to(dev), y.to(dev)
md = m.to(dev)
layout = gnc.build_layout(md, prior["uniform"])
dec = gnc.Decider(md, xd, yd, False, True)
def timed(f, reps=5):
    f(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
for D in ((65536,) if MINI else (16384, 65536)):
    tg = timed(lambda: triton_rng.uniform_rows(1, 0, D, layout.words, dev))
    params = gnc.generate(layout, 1, 0, D, dev, set(dec.names))
    td = timed(lambda: dec.decide(params))
    w = [params[n] for n in dec.names]
    t1 = timed(lambda: dec.plan.logit_difference(w, dec.features[:2]))
    t16 = timed(lambda: dec.plan.logit_difference(w, dec.features[:16]))
    nbytes = D * layout.numbers * 4
    print(f"D={D}: generate {tg*1e3:.2f} ms ({D/tg/1e6:.2f} M draws/s, {nbytes/tg/1e9:.0f} GB/s written), "
          f"decide {td*1e3:.2f} ms ({D/td/1e6:.2f} M draws/s), stage-1 fwd {t1*1e3:.2f} ms, 16-pt fwd {t16*1e3:.2f} ms")
# 4. end-to-end sweep
def sweep(prior_name, opts, budget):
    r = lambda b: SamplingRequest(md, xd, yd, prior[prior_name], 10**12, b, 11, dev, options={"reuse_nested": False, **opts})
    gnc.guess_and_check(r(budget // 10))
    torch.cuda.synchronize(); t = time.perf_counter(); pop = gnc.guess_and_check(r(budget)); torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"{prior_name} {opts}: {pop.candidates_tried/dt/1e6:.3f} M candidates/s, {pop.size/dt:.0f} accepted/s, P={pop.size/pop.candidates_tried:.5f}")
for opts in (({"chunk_size": "auto"},) if MINI else ({"chunk_size": 65536}, {"chunk_size": 262144}, {"chunk_size": "auto"}, {"chunk_size": 262144, "output_swap": False}, {"chunk_size": 262144, "early_rejection": False})):
    sweep("uniform", opts, 6_000_000)
for opts, budget in () if MINI else (({"chunk_size": 65536, "function_space": True}, 400_000), ({"chunk_size": 65536, "function_space": False}, 200_000)):
    sweep("kaiming-normal", opts, budget)
PY
if [ "$MODE" = full ]; then
  timeout ${BENCH_TIMEOUT:-420} $PY -m pytest benchmarks --benchmark-only -p no:cacheprovider -q -s \
      --benchmark-json="$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
fi
