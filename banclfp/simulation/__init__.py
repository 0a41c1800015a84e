"""The battery pack model and ESP32 firmware logic, and the simulated ESP32s on MQTT."""
