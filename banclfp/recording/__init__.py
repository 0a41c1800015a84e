"""One test's record: the folder's files and journal, the store, the recorder's decisions and banc.py's process."""
