"""Compute service: instances on libvirt that boot from cairn images and attach cairn volumes."""
