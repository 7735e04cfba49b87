"""Calorimeter set-to-set models (photons -> clusters): shared core, GNN and Transformer families."""
