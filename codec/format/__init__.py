"""Bytes on disk: the .vz container, images as planes (read and written with Pillow), the 8-bit layers the model
codes, and the classical streams of images coded outside the model."""
