"""Built-in estimator plugins."""
