"""Turning chapters into graph data: extractor seam, chunking, resolution, the pipeline."""
