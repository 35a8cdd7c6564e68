"""tre-audit: the Django service and the command line."""
