"""Making priors: frames in, one 16-bit inverse-depth PNG per frame and a manifest out.

backends/ (the models behind one interface), pipeline (generate: plan, read, infer, write),
store (the files and the folder lock), manifest (OUT/depthprior.json), verify, check, bench,
onnx_export (+ onnx_depth_anything, onnx_architectures: each family's graph parts),
fingerprint (what a local checkpoint holds).
"""
