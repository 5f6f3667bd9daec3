"""Exclusion masks: a segmentation model's sky, people, cars, ... as pixels every consumer leaves
out. segmenter (the model and its class names), masks (the mask folder), run (the command)."""
