"""The edges every process shares: settings and the environment, logging, atomic files and locks, processes."""
