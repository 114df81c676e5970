"""minilstm's benchmarks, run from the repository root as ``python -m bench.NAME``. The canonical benchmark is
``python -m bench.bench`` (a training step and batched greedy decoding against PyTorch and onnxruntime; ``--quick``
checks it end to end in about a minute); each other module at this level times one part (the recurrent step,
attention, decoding, serving, data parallelism, ...); ``bench.torch_models`` is the PyTorch reference of our model,
which the tests check our gradients against and the benchmarks time; ``bench.experiments`` holds the scripts of
one-off studies. ``bench/results/`` holds outputs only; bench/README.md lists every script, what it measures, how
to run it and where its results go."""
