"""Metering service: usage samples from the other services."""
