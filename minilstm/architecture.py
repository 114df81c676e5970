"""One description of a model's shape, shared by everything that builds, stores or exports a model.

``Architecture`` is what ``Seq2Seq`` is built from, what a checkpoint's ``config.json`` stores (beside the
vocabularies and the sequence lengths, which come from the data), what the train command's flags make, and what
``models.build``, the ONNX export and the Keras conversion read. All fields at their defaults: the Keras example's
model (one-layer encoder and decoder of 256 units, no attention, float32, padding computed as the example does).

``embedding_dim`` 0 (the default) is the example's one-hot input; a checkpoint's ``config.json`` names the key only
when it is set (and so the dropouts on embeddings and outputs), so the config of a model without them is what it
always was, and old checkpoints load.
"""

from dataclasses import asdict, dataclass, fields

import numpy as np

from .attention import SCORES

DTYPES = ("float32", "float64")
OPTIONAL = ("embedding_dim", "embedding_dropout", "output_dropout")
"""Fields a ``config.json`` names only where set, so that a model without them has the config it always had."""


@dataclass(frozen=True)
class Architecture:
    latent_dim: int = 256
    """LSTM units of the encoder and of the decoder (the decoder has twice as many with a bidirectional encoder)."""
    dtype: str = "float32"
    mask_padding: bool = False
    """Train on real characters only (length-bucketed batches, padding targets ignored); decode without padding."""
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional_encoder: bool = False
    dropout: float = 0.0
    """Inverted dropout between stacked LSTM layers, in training only."""
    attention: str = "none"
    """``none`` (the example's model) or a Luong score: ``dot``, ``general``, ``concat``."""
    input_feed: bool = True
    """With attention: the decoder's input is the previous character and the previous attentional output. Always
    False without attention (there is nothing to feed)."""
    embedding_dim: int = 0
    """A trained (V, E) embedding table before each LSTM stack instead of the one-hot input; 0: one-hot (the
    example's)."""

    embedding_dropout: float = 0.0
    """Inverted dropout on the embedded inputs of both stacks, in training only (needs ``embedding_dim``)."""
    output_dropout: float = 0.0
    """Inverted dropout on the decoder's top outputs (with attention: the attentional outputs) before the output
    layer, in training only. With input feeding, the value fed to the next step is the one before dropout."""

    def __post_init__(self):
        dtype = str(np.dtype(self.dtype))
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.attention not in ("none", *SCORES):
            raise ValueError(f"attention must be 'none' or one of {SCORES}, not {self.attention!r}")
        embedding_dim = int(self.embedding_dim or 0)
        if embedding_dim < 0:
            raise ValueError(f"embedding_dim must be 0 (one-hot input) or positive, not {self.embedding_dim}")
        for name in ("embedding_dropout", "output_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.embedding_dropout and not embedding_dim:
            raise ValueError("embedding_dropout needs embeddings (embedding_dim > 0)")
        normal = {"latent_dim": int(self.latent_dim), "dtype": dtype, "mask_padding": bool(self.mask_padding),
                  "encoder_layers": int(self.encoder_layers), "decoder_layers": int(self.decoder_layers),
                  "bidirectional_encoder": bool(self.bidirectional_encoder), "dropout": float(self.dropout),
                  "input_feed": bool(self.input_feed) and self.attention != "none", "embedding_dim": embedding_dim,
                  "embedding_dropout": float(self.embedding_dropout), "output_dropout": float(self.output_dropout)}
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, config: dict) -> "Architecture":
        """The architecture a ``config.json`` (or any mapping with these keys) describes; keys a checkpoint from
        before an option existed lacks take that option's default, and other keys are ignored."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    @classmethod
    def from_args(cls, args) -> "Architecture":
        """The architecture the train command's parsed flags ask for (a flag its namespace lacks: the default)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_config(self) -> dict:
        """The fields by name; the ones added since the first checkpoints only where set (module doc)."""
        config = asdict(self)
        for name in OPTIONAL:
            if not config[name]:
                del config[name]
        return config

    def beyond_example(self) -> dict:
        """The options the Keras example's model does not have (all at their defaults: the example's model);
        ``embedding_dim`` only where set, so that what a model without embeddings reports is unchanged."""
        names = ("encoder_layers", "decoder_layers", "bidirectional_encoder", "dropout", "attention", "input_feed")
        return {name: getattr(self, name) for name in names + tuple(name for name in OPTIONAL if getattr(self, name))}

    def is_example(self) -> bool:
        """Whether this is the Keras example's model (whatever its size, dtype and padding handling)."""
        defaults = Architecture()
        return all(getattr(self, name) == getattr(defaults, name) for name in self.beyond_example())
