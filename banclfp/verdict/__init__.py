"""The end of a test: the lab's grading model, the verdict journaled and the certificate."""
