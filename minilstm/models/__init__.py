"""Models shipped inside the package: ``DEFAULT_MODEL`` is what ``minilstm serve`` serves with no argument.

``python -m minilstm.models.build --from CHECKPOINT`` packages a trained checkpoint as this model (see that module)."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "en-fr-default"
