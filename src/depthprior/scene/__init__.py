"""Fitting and using priors: the SfM scene, per-image scale/offset, exports for trainers.

colmap (+ colmap_files: the checked reader), sampling (SfM points -> prior samples), fitting
(robust and the official mad recipe), depth_params (depth_params.json and the align report),
align (the command), priorset (priors as a trainer reads them), export (nerfstudio, DN-Splatter).
The trainer-side loader and losses are depthprior.training.
"""
