"""Quality classifiers: Claude seed labelling and fastText training and scoring.

The labelling and classifier stages land with their own issue; this package is
declared now so the distribution's layout is fixed from the start.
"""
