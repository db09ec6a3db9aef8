"""The Docker Engine driver: containers as cloudlet instances."""
