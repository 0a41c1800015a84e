"""What travels between the ESP32s, banc.py and the kiosk: topics, QoS, payloads and their codecs."""
