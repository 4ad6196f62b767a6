"""The Ray Serve application: FastAPI job API and the classifier endpoint (not built yet;
the trained classifier's Python API is `jobs.classifier.model.DecisionClassifier`)."""
