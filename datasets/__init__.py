"""Event schema, generation (Pythia8, detector simulation, PF baseline, MLPF targets), ROOT I/O and loaders."""
