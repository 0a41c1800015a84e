"""The lab's history of tests: the index behind --history/--results and the 48 business hours before a retest."""
