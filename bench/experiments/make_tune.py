"""The tuning tenth: every tenth distinct English sentence of the shipped model's random held-out split (seed 0,
20%), in held-out order, with all its references from the whole file.

    python -m bench.experiments.make_tune tune.json
"""

import json
import sys

from minilstm.data import resolve_pairs, validation_rows

pairs = resolve_pairs("../shared/data/fra-eng/fra.txt", None)
_, held_out = validation_rows(pairs, 0.2, "random", 0)
references = {}
for english, french in pairs:
    references.setdefault(english, []).append(french)
distinct = list(dict.fromkeys(pairs[k][0] for k in held_out))
tune = [[english, references[english]] for i, english in enumerate(distinct) if i % 10 == 0]
json.dump(tune, open(sys.argv[1], "w"), ensure_ascii=False)
print(f"{len(tune):,} of {len(distinct):,} held-out English sentences")
