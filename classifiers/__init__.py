"""Quality classifiers: Claude seed labelling and fastText training and scoring.

Built so far: rubrics, the labelling sample, the grading request and its clients
(Messages and Message Batches), the label store, and fastText training. The
`curate label`, `train-classifier` and `score` commands are still to come.
"""
