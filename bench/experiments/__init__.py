"""The scripts of one-off studies, each run from the repository root as ``python -m bench.experiments.NAME``; their
outputs, and the notes on what they showed, stay under ``bench/results/``. The shell scripts in the folders here
(one per results folder: ``equal-time-best/``, ``feed-bidirectional/``, ``haswell-repeats/``, ...) are records of
runs made on the development machine: they name its paths (/work/...) and are kept as they ran."""
