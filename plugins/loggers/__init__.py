"""Built-in metrics logger plugins."""
