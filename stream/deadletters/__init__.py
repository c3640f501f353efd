"""Dead letters users can act on: summary, export and redrive (`python -m stream.deadletters`)."""
