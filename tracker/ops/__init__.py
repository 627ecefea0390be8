"""What operators configure and observe: frozen settings from the environment and metrics."""
