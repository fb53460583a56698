"""Framework-free numerics of DeepHEMNMA (numpy, torch, ProDy, scikit-learn).

Never import pyworkflow or pwem here."""
