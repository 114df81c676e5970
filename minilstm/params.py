"""All tensors of a model in one flat buffer with named views into it (as llm.c does).

One allocation, one optimizer pass over one array (a single fused kernel on the GPU), one checkpoint array.
Gradients use a second buffer with the same layout.
"""

import math


class NamedArrays:
    """Reading ``self.views``, a dict of named arrays: ``self[name]``, iteration over the names, ``items()``,
    ``group(prefix)``."""

    views: dict

    def __getitem__(self, name):
        return self.views[name]

    def __iter__(self):
        return iter(self.views)

    def items(self):
        return self.views.items()

    def group(self, prefix: str) -> dict:
        """The views whose names start with ``prefix + "."``, keyed by the rest: ``group("encoder")["kernel"]``."""
        start = prefix + "."
        return {name[len(start) :]: view for name, view in self.views.items() if name.startswith(start)}


class FlatParameters(NamedArrays):
    """Named views ``self[name]`` of shape ``shapes[name]`` into the 1-D array ``self.flat``."""

    def __init__(self, xp, shapes: dict[str, tuple[int, ...]], dtype):
        self.shapes = dict(shapes)
        self.flat = xp.zeros(sum(math.prod(s) for s in self.shapes.values()), dtype=dtype)
        self.views = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            self.views[name] = self.flat[offset : offset + size].reshape(shape)
            offset += size


class ParameterView(NamedArrays):
    """Some weights of a ``Parameters`` replaced by other arrays, read like it (``view[name]``, ``backend``,
    ``dtype``): the weights decoding reads where embeddings are folded into the first kernels
    (``Seq2Seq.folded``)."""

    def __init__(self, params, replaced: dict):
        self.backend, self.dtype = params.backend, params.dtype
        self.views = {**params.views, **replaced}
