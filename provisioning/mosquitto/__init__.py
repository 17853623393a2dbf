"""Shipped Mosquitto configuration templates (see README.md in this folder)."""
