"""Hand-written CUDA C++ kernel sources, shipped inside the wheel as ``minilstm/kernels/*.cu`` and compiled at run
time by CuPy (``RawModule``). Nothing here is Python; this file only makes the folder a package for packaging."""
