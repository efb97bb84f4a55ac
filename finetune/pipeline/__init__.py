"""The verbs a command calls once a run is set up (finetune/setup): train a run into its
directory (training.py), evaluate or predict with a finished one (inference.py), and fold an
adapter into its base with a checked merge (merging.py)."""
