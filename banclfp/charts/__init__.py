"""The charts of a test: what they plot (decimated, on the measurement time axis) and the matplotlib figure."""
