"""Statistics of predictions: metrics, intervals, operating points."""
