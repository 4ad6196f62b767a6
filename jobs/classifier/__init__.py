"""The safety-decision classifier: a BERT-family model over (prompt, response) pairs."""
