"""The files depthprior reads and writes, each kind with one owner that every command uses.

- `place`: where files live (a local folder or object storage): reading bytes, regular files
  only, with a size cap.
- `jsonfile`: every JSON file (manifest, depth_params.json and its report, consistency.json,
  transforms.json, ONNX metadata): read with a size cap, a nesting limit and a shape check;
  written atomically.
- `raster`: images, priors and masks: the header is checked (pixel cap, aspect ratio, size,
  dtype and channels) before anything is decoded.
- `outputs`: an output folder a command owns: its lock, atomic writes whose errors name the
  file, and the removal of what a rerun no longer produces.

Anything wrong with a file is one typed error naming it (`errors.FileFormatError`,
`errors.WriteError`, `errors.ImageError` for one image of a batch).
"""
