"""Model loading: the embedded offline models and name resolution."""
