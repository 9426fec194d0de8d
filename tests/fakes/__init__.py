"""Stand-ins for hardware libraries that cannot be installed off the device (picamera2)."""
