"""Particle identification per species: isMuon classifier, RICH/MUON/GlobalPID generators, the chained pipeline."""
