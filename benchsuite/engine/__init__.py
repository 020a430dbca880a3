"""Population engines: the hot tensor code, free of I/O and CLI concerns.

Importing this package loads nothing: each engine is its own module, imported where it is used.
- gnc.py: exact Guess & Check (guess_and_check, GuessAndCheck, regenerate_function_space), built
  from draws.py (candidates from (seed, index); regenerate), decisions.py (fit or not, staged),
  reuse.py (nested reuse across N), sizing.py (chunk sizes), threads.py (CPU threads);
  random.py and triton_rng.py: the counter-based Philox stream (native.py and philox.c: the
  same stream compiled for the CPU, where a C compiler is found); function_space.py: Gaussian
  priors drawn in function space.
- training.py: many-model gradient training (stacked_mlp.py, stacked_conv.py, stacked_resnet.py,
  stacked_optim.py, batches.py), calling every optimizer as stepping.py says
  (docs/optimizer-contract.md); parts.py splits its rounds over workers.
- evaluation.py: the host's accuracy and ties, stacked.evaluate's numbers faster (wide.py:
  formulations checked bit for bit against the old calls; blocks.py: the inner loop).
- gemm_check.py: whether batched products compute each network by itself in this process.
- native.py: the compiled kernels (philox.c for G&C's weights, convnet.c for LeNet and ResNet4
  training).
- threads.py: the one threading policy of every path (workers across networks, one thread per
  kernel).
"""

# The revision of the engine's arithmetic: bump it in the commit that changes the bits any path
# computes for a network (a new formulation, another summation order), never for speed alone.
# Every cell records it beside its plugin versions (runner.cell_plugins), so a folder resumed
# after such a change stops instead of silently mixing the two arithmetics (cells recorded
# before revisions existed are not checked). 2: LeNet trains on engine/stacked_conv.py.
# 3: ResNet4 trains on engine/stacked_resnet.py. 4: LeNet's col2im sums in two stages.
# 5: G&C decides BatchNorm networks on engine/batchnorm_gnc.py (a candidate within float32
# rounding of a tie may be decided otherwise). 6: the Lipschitz metric's input gradients of
# LeNets are written out (metrics/input_gradients.py; equal to float32 rounding). 7: MKL runs in
# its reproducible mode (MKL_CBWR=AUTO, benchsuite/__init__.py; gemm_check.py), which on some
# CPUs (the AMD EPYC) picks other GEMM kernels: every path's numbers there move by rounding;
# BatchNorm G&C pads calls of fewer than 8 networks (batchnorm_gnc.MIN_GROUPS). 8: subset-mcmc
# ranks particles by (points fitted, margin) exactly, not by their sum in float64 (subset.scores).
# 9: LeNet-family training computes each network's forward and backward in convnet.c where a C
# compiler is found and the network is small (stacked_conv.NATIVE_MAX_CONV_MACS); a machine
# without one trains them on the patches formulation (environment.json: "compiled_kernels").
# 10: convnet.c takes networks up to 800,000 convolution multiply-adds per image (250,000
# before: LeNet 32x32x3 at widths 4/6 to 1 and 28x28 above width 1 up to 2 leave the patches
# formulation); the blocked kernel itself computes revision 9's bits. The Lipschitz metric's
# input gradients of those networks come from convnet.c (stacked_conv.native_margin_norms; equal
# to the written-out path's to float32 rounding, squares summed in double).
# 11: optimizers that are neither elementwise nor stack-aware (LAMB, Shampoo, Muon, ...) step
# each network of an MLP or LeNet-family stack on the stacked formulation's gradients (training's
# "per_network_stacked" path), not on autograd's through a module per network: equal to float32
# rounding, the same to 1e-12 in float64; optimizers with a closure keep "per_network".
# 12: ResNet4 trains on convnet.c (bs_resnet_gradients) where a C compiler is found: each
# network's forward and backward in cache, a batch at a time (equal to float32 rounding); its
# test accuracies and the Lipschitz metric's input gradients come from convnet.c too
# (bs_resnet_logits, bs_resnet_margin_norms; engine/evaluation.py no longer gives ResNet4
# StackedForward's bits). MLP and LeNet cells keep recording 11 (resolved.UNCHANGED_BY): their
# bits are as they were.
NUMERICS_REVISION = 12
