"""What a test's data says: data.csv read and counted, the charge profile and temperature correction, time left, the BDF export."""
