"""How numbers, colours and summaries are shown to a person (kiosk, certificate, reports)."""
